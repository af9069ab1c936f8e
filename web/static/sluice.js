// Shared by the pages: parameters from the URL fragment, the daemon's base URL, WHIP/WHEP.
// Fragment parameters (never sent to a server): token, server, identity, mode, start.

export const params = new URLSearchParams(location.hash.slice(1));

// server is the daemon's URL: the page's own origin unless the fragment names another.
export const server = (params.get('server') || location.origin).replace(/\/+$/, '');

export const token = params.get('token') || '';

// room is the room of a /r/<room>[/publish] page.
export function roomOfPath() {
  const m = location.pathname.match(/^\/r\/([^/]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

// authHeaders carries the token, if any, as a Bearer header.
export function authHeaders(extra = {}) {
  return token ? {...extra, Authorization: 'Bearer ' + token} : extra;
}

// fragment returns the fragment that carries the token and server on to another page.
export function fragment(extra = {}) {
  const p = new URLSearchParams();
  if (params.get('server')) p.set('server', params.get('server'));
  if (token) p.set('token', token);
  for (const [k, v] of Object.entries(extra)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? '#' + s : '';
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise(resolve => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

// negotiate sends pc's offer to a WHIP or WHEP endpoint (RFC 9725) and applies the answer; it
// returns the session URL (for DELETE).
export async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 2000);
  const resp = await fetch(url, {method: 'POST', headers: authHeaders({'Content-Type': 'application/sdp'}),
    body: pc.localDescription.sdp});
  const body = await resp.text();
  if (resp.status !== 201) {
    let msg = body;
    try { msg = JSON.parse(body).error.message || body; } catch (e) { /* not JSON */ }
    throw new Error(resp.status + ': ' + msg);
  }
  await pc.setRemoteDescription({type: 'answer', sdp: body});
  const loc = resp.headers.get('Location');
  return loc ? new URL(loc, url).href : '';
}

// endSession deletes a WHIP/WHEP session (best effort).
export function endSession(url) {
  if (url) fetch(url, {method: 'DELETE', headers: authHeaders(), keepalive: true}).catch(() => {});
}

export function codecOf(stats, s) {
  const c = s.codecId && stats.get(s.codecId);
  return c ? c.mimeType.replace(/^(video|audio)\//, '') : '';
}

export function kbps(bytesNow, bytesBefore, ms) {
  return ms > 0 ? Math.round((bytesNow - bytesBefore) * 8 / ms) : 0;
}
