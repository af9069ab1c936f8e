// Plays a room over WHEP; over LL-HLS when WHEP fails (or with #mode=hls): hls.js where the
// browser has Media Source Extensions, else the browser's own HLS (Safari on iPhone). The
// overlay shows the figures of the transport in use; window.sluice holds them too.
import {params, server, token, roomOfPath, fragment, negotiate, endSession, codecOf, kbps} from './sluice.js';

const room = params.get('room') || roomOfPath();
const identity = params.get('identity') || '';
const video = document.getElementById('video');
const overlay = document.getElementById('overlay');
const errorBox = document.getElementById('error');
const modeSelect = document.getElementById('mode');
const stats = window.sluice = {room, mode: '', state: 'starting', painted: 0};

document.getElementById('title').textContent = room + (identity ? ' / ' + identity : '');
document.getElementById('publish').href = '/r/' + encodeURIComponent(room) + '/publish' + fragment();
document.getElementById('rooms').href = '/' + fragment();
document.getElementById('unmute').onclick = () => { video.muted = false; video.play(); };
modeSelect.value = params.get('mode') || 'auto';
modeSelect.onchange = () => {
  const p = new URLSearchParams(location.hash.slice(1));
  p.set('mode', modeSelect.value);
  location.hash = p.toString();
  location.reload();
};

// frames actually painted
if (video.requestVideoFrameCallback) {
  const count = () => { stats.painted++; video.requestVideoFrameCallback(count); };
  video.requestVideoFrameCallback(count);
}

function showError(msg) {
  errorBox.textContent = msg;
  stats.error = msg;
}

// note shows why the player changed course (not an error of the page).
function note(msg) {
  errorBox.textContent = msg;
  stats.note = msg;
}

const path = encodeURIComponent(room) + (identity ? '/' + encodeURIComponent(identity) : '');
let pc = null;
let session = '';
let sampler = null;

async function playWHEP() {
  stats.mode = 'whep';
  pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const stream = new MediaStream();
  pc.ontrack = ev => {
    stream.addTrack(ev.track);
    video.srcObject = stream;
  };
  session = await negotiate(pc, server + '/whep/' + path);
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no WebRTC connection after 10 s')), 10000);
    pc.onconnectionstatechange = () => {
      stats.state = pc.connectionState;
      if (pc.connectionState === 'connected') { clearTimeout(t); resolve(); }
      if (pc.connectionState === 'failed') { clearTimeout(t); reject(new Error('the WebRTC connection failed')); }
    };
  });
  let before = null;
  sampler = setInterval(async () => {
    const report = await pc.getStats();
    const now = {t: performance.now()};
    report.forEach(s => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        Object.assign(stats, {videoCodec: codecOf(report, s), width: s.frameWidth, height: s.frameHeight,
          fps: s.framesPerSecond, framesDecoded: s.framesDecoded, videoLost: s.packetsLost,
          jitterMs: Math.round((s.jitter || 0) * 1000)});
        now.vbytes = s.bytesReceived;
      } else {
        Object.assign(stats, {audioCodec: codecOf(report, s), audioLost: s.packetsLost, audioSamples: s.totalSamplesReceived});
        now.abytes = s.bytesReceived;
      }
    });
    if (before) {
      stats.videoKbps = kbps(now.vbytes || 0, before.vbytes || 0, now.t - before.t);
      stats.audioKbps = kbps(now.abytes || 0, before.abytes || 0, now.t - before.t);
    }
    before = now;
    overlay.textContent = [
      'WebRTC (WHEP) · ' + stats.state,
      'video ' + (stats.videoCodec || '-') + ' ' + (stats.width || 0) + 'x' + (stats.height || 0) + ' ' + (stats.fps || 0) + ' fps ' + (stats.videoKbps || 0) + ' kb/s',
      'audio ' + (stats.audioCodec || '-') + ' ' + (stats.audioKbps || 0) + ' kb/s',
      'lost ' + (stats.videoLost || 0) + '/' + (stats.audioLost || 0) + ' · jitter ' + stats.jitterMs + ' ms',
      'painted ' + stats.painted,
    ].join('\n');
  }, 1000);
  pc.onconnectionstatechange = () => {
    stats.state = pc.connectionState;
    if (pc.connectionState === 'failed' && modeSelect.value === 'auto') fallback(new Error('the WebRTC connection failed'));
  };
}

function loadHlsJs() {
  if (window.Hls) return Promise.resolve(window.Hls);
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = '/static/vendor/hls.min.js';
    s.onload = () => resolve(window.Hls);
    s.onerror = () => reject(new Error('cannot load hls.js'));
    document.head.append(s);
  });
}

async function playHLS() {
  const url = server + '/hls/' + path + '/index.m3u8' + (token ? '?access_token=' + encodeURIComponent(token) : '');
  let hls = null;
  const mse = window.MediaSource || window.ManagedMediaSource;
  if (mse) {
    const Hls = await loadHlsJs();
    if (Hls && Hls.isSupported()) {
      stats.mode = 'hls.js';
      hls = new Hls({lowLatencyMode: true});
      hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) showError('HLS: ' + d.type + ' ' + d.details); });
      hls.loadSource(url);
      hls.attachMedia(video);
    }
  }
  if (!hls) {
    if (!video.canPlayType('application/vnd.apple.mpegurl')) throw new Error('this browser plays neither WebRTC nor HLS');
    stats.mode = 'native hls';
    video.src = url;
  }
  stats.state = 'loading';
  video.play().catch(() => {});
  sampler = setInterval(() => {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    let latency = hls ? hls.latency : NaN;
    if (!hls && video.getStartDate) {
      const start = video.getStartDate().getTime();
      if (!isNaN(start)) latency = (Date.now() - start) / 1000 - video.currentTime;
    }
    const level = hls && hls.levels[hls.currentLevel];
    Object.assign(stats, {state: video.paused ? 'paused' : 'playing', width: video.videoWidth, height: video.videoHeight,
      latency: Math.round(latency * 100) / 100, dropped: q.droppedVideoFrames || 0,
      videoCodec: level ? level.videoCodec : '', audioCodec: level ? level.audioCodec : ''});
    overlay.textContent = [
      'LL-HLS (' + stats.mode + ') · ' + stats.state,
      'video ' + (stats.videoCodec || '') + ' ' + stats.width + 'x' + stats.height + (level && level.bitrate ? ' ' + Math.round(level.bitrate / 1000) + ' kb/s' : ''),
      'audio ' + (stats.audioCodec || ''),
      'latency ' + (isNaN(latency) ? '-' : latency.toFixed(2) + ' s') + ' · dropped ' + stats.dropped,
      'painted ' + stats.painted,
    ].join('\n');
  }, 1000);
}

let fellBack = false;
function fallback(e) {
  if (fellBack) return;
  fellBack = true;
  clearInterval(sampler);
  if (pc) { pc.close(); pc = null; }
  endSession(session);
  note('WebRTC: ' + e.message + ' · playing LL-HLS instead');
  playHLS().catch(e2 => showError('WebRTC: ' + e.message + '\nHLS: ' + e2.message));
}

window.addEventListener('pagehide', () => endSession(session));

(async () => {
  if (!room) throw new Error('no room in the URL');
  const mode = modeSelect.value;
  if (mode === 'hls') return playHLS();
  try {
    await playWHEP();
  } catch (e) {
    if (mode === 'whep') throw e;
    fallback(e);
  }
})().catch(e => showError(e.message));
