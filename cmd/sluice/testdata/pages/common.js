// Shared by the test pages: report to the test's own origin, keep only loopback candidates (or
// those of the address the test names in ?host=, for a page in a network namespace).
const params = new URLSearchParams(location.search);
async function report(o) {
  try {
    await fetch('/report?id=' + encodeURIComponent(params.get('id')), {method: 'POST', body: JSON.stringify(o)});
  } catch (e) { /* the test may be gone */ }
}
function loopbackOnly(sdp) {
  const host = ' ' + (params.get('host') || '127.0.0.1') + ' ';
  return sdp.split('\r\n').filter(l => !l.startsWith('a=candidate:') || l.includes(host)).join('\r\n');
}
async function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise(resolve => {
    const t = setTimeout(resolve, 2000);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}
// negotiate POSTs the offer to a WHIP/WHEP endpoint and applies the answer.
async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const headers = {'Content-Type': 'application/sdp'};
  if (params.get('token')) headers['Authorization'] = 'Bearer ' + params.get('token');
  const resp = await fetch(url, {method: 'POST', headers, body: pc.localDescription.sdp});
  const body = await resp.text();
  if (resp.status !== 201) throw new Error(url + ': ' + resp.status + ' ' + body);
  await pc.setRemoteDescription({type: 'answer', sdp: loopbackOnly(body)});
  return resp.headers.get('Location');
}
function codecOf(stats, s) {
  const c = s.codecId && stats.get(s.codecId);
  return c ? c.mimeType : '';
}
function fail(e) { report({error: String(e && e.stack || e)}); }
