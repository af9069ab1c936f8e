// Sends a camera and a microphone to a room over WHIP, with the devices and codecs chosen
// here; #start=1 publishes at once with the first (or the fragment's vcodec/acodec) choices.
import {params, server, roomOfPath, fragment, negotiate, endSession, codecOf, kbps, el} from './sluice.js';

const room = params.get('room') || roomOfPath();
const $ = id => document.getElementById(id);
const stats = window.sluice = {room, state: 'idle'};
$('title').textContent = 'publish to ' + room;
$('play').href = '/r/' + encodeURIComponent(room) + fragment();

let stream = null;
let pc = null;
let session = '';
let sampler = null;

function showError(msg) {
  $('error').textContent = msg;
  if (msg) stats.error = msg; else delete stats.error;
}

// fill puts options in a select, keeping the current or the wanted choice.
function fill(select, items, want) {
  const keep = want || select.value;
  select.replaceChildren(...items.map(([value, label]) => el('option', {value}, label)));
  if (items.some(([v]) => v === keep)) select.value = keep;
}

function codecs(kind) {
  const seen = new Set();
  const out = [];
  for (const c of RTCRtpSender.getCapabilities(kind).codecs) {
    const name = c.mimeType.split('/')[1];
    if (['rtx', 'red', 'ulpfec', 'flexfec-03', 'CN', 'telephone-event'].includes(name) || seen.has(name)) continue;
    seen.add(name);
    out.push([name, name]);
  }
  return out;
}

async function openDevices() {
  if (stream) stream.getTracks().forEach(t => t.stop());
  const cam = $('camera').value;
  const mic = $('mic').value;
  stream = await navigator.mediaDevices.getUserMedia({
    video: cam ? {deviceId: {exact: cam}} : true,
    audio: mic ? {deviceId: {exact: mic}} : true,
  });
  $('preview').srcObject = stream;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const list = kind => devices.filter(d => d.kind === kind).map((d, i) => [d.deviceId, d.label || kind + ' ' + (i + 1)]);
  fill($('camera'), list('videoinput'), stream.getVideoTracks()[0]?.getSettings().deviceId);
  fill($('mic'), list('audioinput'), stream.getAudioTracks()[0]?.getSettings().deviceId);
}

// prefer puts the chosen codec first (the others stay as fallbacks the server may pick).
function prefer(transceiver, kind, name) {
  const all = RTCRtpSender.getCapabilities(kind).codecs;
  const first = all.filter(c => c.mimeType.toLowerCase() === (kind + '/' + name).toLowerCase());
  if (first.length && transceiver.setCodecPreferences) {
    transceiver.setCodecPreferences([...first, ...all.filter(c => !first.includes(c))]);
  }
}

async function start() {
  showError('');
  $('start').disabled = true;
  try {
    if (!stream) await openDevices();
    pc = new RTCPeerConnection();
    const vt = stream.getVideoTracks()[0];
    const at = stream.getAudioTracks()[0];
    if (vt) prefer(pc.addTransceiver(vt, {direction: 'sendonly', streams: [stream]}), 'video', $('vcodec').value);
    if (at) prefer(pc.addTransceiver(at, {direction: 'sendonly', streams: [stream]}), 'audio', $('acodec').value);
    pc.onconnectionstatechange = () => { stats.state = pc ? pc.connectionState : 'idle'; };
    session = await negotiate(pc, server + '/whip/' + encodeURIComponent(room));
    $('stop').disabled = false;
    let before = null;
    sampler = setInterval(async () => {
      if (!pc) return;
      const report = await pc.getStats();
      const now = {t: performance.now()};
      report.forEach(s => {
        if (s.type !== 'outbound-rtp') return;
        if (s.kind === 'video') {
          Object.assign(stats, {videoCodec: codecOf(report, s), width: s.frameWidth, height: s.frameHeight,
            fps: s.framesPerSecond, framesEncoded: s.framesEncoded, framesSent: s.framesSent});
          now.vbytes = (now.vbytes || 0) + s.bytesSent;
        } else {
          Object.assign(stats, {audioCodec: codecOf(report, s), audioPacketsSent: s.packetsSent});
          now.abytes = s.bytesSent;
        }
      });
      if (before) {
        stats.videoKbps = kbps(now.vbytes || 0, before.vbytes || 0, now.t - before.t);
        stats.audioKbps = kbps(now.abytes || 0, before.abytes || 0, now.t - before.t);
      }
      before = now;
      $('overlay').textContent = [
        'WHIP · ' + stats.state,
        'video ' + (stats.videoCodec || '-') + ' ' + (stats.width || 0) + 'x' + (stats.height || 0) + ' ' + (stats.fps || 0) + ' fps ' + (stats.videoKbps || 0) + ' kb/s',
        'audio ' + (stats.audioCodec || '-') + ' ' + (stats.audioKbps || 0) + ' kb/s',
        'frames sent ' + (stats.framesSent || 0),
      ].join('\n');
    }, 1000);
  } catch (e) {
    showError(e.message);
    stop();
  }
}

function stop() {
  clearInterval(sampler);
  if (pc) pc.close();
  pc = null;
  endSession(session);
  session = '';
  stats.state = 'idle';
  $('overlay').textContent = 'not publishing';
  $('start').disabled = false;
  $('stop').disabled = true;
}

$('start').onclick = start;
$('stop').onclick = stop;
for (const id of ['camera', 'mic']) {
  $(id).onchange = async () => {
    await openDevices();
    if (pc) { // switch the sending track in place
      for (const sender of pc.getSenders()) {
        const t = stream.getTracks().find(x => sender.track && x.kind === sender.track.kind);
        if (t) await sender.replaceTrack(t);
      }
    }
  };
}
window.addEventListener('pagehide', () => endSession(session));

fill($('vcodec'), codecs('video'), params.get('vcodec'));
fill($('acodec'), codecs('audio'), params.get('acodec') || 'opus');
openDevices().then(() => {
  if (params.get('start') === '1') start();
}).catch(e => showError('camera/microphone: ' + e.message));
