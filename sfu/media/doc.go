// Package media is the frame layer of sluice: it turns codec frames into the RTP packets of an
// sfu track and back, and it parses codec parameters. Frames and codec parameters live here and
// nowhere else.
//
// Writer packetizes for the ingests that receive frames (RTMP) or must rewrite packets (RTSP
// cameras: oversized packets, parameter sets only in the SDP), so that every track follows the
// same rules: packets fit the WebRTC MTU, H.264/H.265 parameter sets are in-band before every
// keyframe, and the first packet of a keyframe is flagged.
//
// Reader (NewReader) turns a track's packets back into frames for the consumers that need them
// (the recorder, the RTMP broadcaster, the transcoder's feeder): per codec, access units with
// their decode time, keyframe flag and the parameter sets learned from the fmtp and the stream.
// H.264/H.265 and AAC are read by our own depacketizers, which allocate nothing per packet once
// warm; gortsplib's allocate per packet (its AAC decoder its AU list and header sizes, its H.26x
// decoders every access unit). VP8, VP9 and AV1 use gortsplib's decoders.
//
// Decode times: a producer that knows them (the RTMP ingest, from FLV) writes with
// Writer.WriteDTS and the packets carry them (sfu.Packet.HasDTS, DTSOffset); readers use them as
// they are. Otherwise (WebRTC, RTSP: RTP has presentation times only) the H.264/H.265 reader
// derives exact decode times from the SPS reorder depth, holding that many frames.
//
// Codec parameters (FmtpValue, FmtpInt, SpropSets, H264Sprop, H265Sprop, ParseAAC) are parsed
// with bounds checks; malformed values are errors wrapping ErrCodecParams, never panics.
//
// # Frames in the hub: decided against, decode times in
//
// MediaMTX's unit carries the RTP packets and the decoded access unit together, so a stream is
// depacketized once. Measured here (BenchmarkReaderH264, BenchmarkReaderH264Shared: one second
// of 30 fps H.264, 193 packets, AMD EPYC, 2 cores):
//
//   - reading frames in a consumer, buffers reused: 41 ns per packet, 0 allocations;
//   - the same with a frame the hub could share (immutable, outliving the reader's buffers, as
//     every subscriber queue may hold it): 404 ns per packet, 2 allocations and 6.7 kB per frame;
//   - the fan-out costs 38 to 64 ns per packet per subscriber (sfu BenchmarkFanout).
//
// A frame in the packet would be paid by the producer of every track, also when only WebRTC
// viewers (which forward RTP) read it, and costs as much as ten consumers reading for
// themselves; tracks have a few frame consumers at most (recordings, broadcast destinations, a
// conversion). So packets carry RTP, and a frame consumer reads with its own Reader. The decode
// time is the exception: what a producer knows cannot be derived exactly later (a reorder depth
// the SPS does not state), so it rides in the packet, in five bytes of the padding after
// Packet.Keyframe: sfu.Packet stays 128 bytes and the fan-out is unchanged.
package media
