// The rooms and their participants, refreshed from /v1/status at every event of the log's
// live stream (GET /v1/events?follow=1), or every 5 s when the stream is not available.
import {server, token, authHeaders, fragment, el} from './sluice.js';

const state = document.getElementById('state');
const box = document.getElementById('rooms');
window.sluice = {rooms: [], updated: 0, live: false};

function tracksText(tracks) {
  return (tracks || []).map(t => {
    let s = t.kind + ' ' + t.codec;
    if (t.width) s += ' ' + t.width + 'x' + t.height;
    if (t.bitrate_kbps) s += ' ' + Math.round(t.bitrate_kbps) + ' kb/s';
    return s;
  }).join(', ');
}

function render(rooms) {
  box.replaceChildren();
  if (rooms.length === 0) {
    box.append(el('p', {class: 'muted'}, 'No rooms.'));
    return;
  }
  const table = el('table', {}, el('tr', {}, el('th', {}, 'room'), el('th', {}, 'participants'), el('th', {}, '')));
  for (const r of rooms) {
    const name = r.room.name;
    const list = el('ul', {});
    for (const p of r.participants || []) {
      const who = p.participant;
      const li = el('li', {'data-identity': who.identity}, who.identity + ' ', el('span', {class: 'muted'}, '(' + who.kind + ')'));
      const tt = tracksText(p.tracks);
      if (tt) li.append(' ', el('span', {class: 'muted'}, tt));
      list.append(li);
    }
    const room = encodeURIComponent(name);
    table.append(el('tr', {'data-room': name}, el('td', {}, name), el('td', {}, list),
      el('td', {}, el('a', {href: '/r/' + room + fragment()}, 'play'), ' ',
        el('a', {href: '/r/' + room + '/publish' + fragment()}, 'publish'))));
  }
  box.append(table);
}

let pending = null;
async function refresh() {
  pending = null;
  try {
    const resp = await fetch(server + '/v1/status', {headers: authHeaders()});
    const body = await resp.json();
    if (!resp.ok) throw new Error(resp.status + ': ' + (body.error && body.error.message || ''));
    const rooms = body.rooms || [];
    window.sluice.rooms = rooms.map(r => ({name: r.room.name, participants: (r.participants || []).map(p => p.participant.identity)}));
    window.sluice.updated++;
    render(rooms);
    state.textContent = (window.sluice.live ? 'live' : 'polling') + ' · ' + body.node + ' · sluice ' + body.version;
    state.className = 'muted';
  } catch (e) {
    state.textContent = 'cannot read ' + server + '/v1/status: ' + e.message;
    state.className = 'error';
  }
}

function soon() {
  if (!pending) pending = setTimeout(refresh, 250);
}

function follow() {
  const q = new URLSearchParams({follow: '1'});
  if (token) q.set('access_token', token); // EventSource sends no headers
  const es = new EventSource(server + '/v1/events?' + q);
  es.onopen = () => { window.sluice.live = true; soon(); };
  es.onmessage = soon;
  es.onerror = () => { window.sluice.live = false; };
}

document.getElementById('go').addEventListener('submit', ev => {
  ev.preventDefault();
  const room = encodeURIComponent(document.getElementById('room').value);
  location.href = '/r/' + room + (ev.submitter && ev.submitter.name === 'publish' ? '/publish' : '') + fragment();
});

refresh();
follow();
setInterval(() => { if (!window.sluice.live) refresh(); }, 5000);
