// Peloton spectator page.
//
// A client like any other: it speaks the JSON subprotocol (peloton.v1.json, PROTOCOL.md) over
// /ws with a spectator token — from a share link's #token= fragment, or a guest token from
// /api/guest-token when the server's races are public. Updates only change the model; the
// screen is redrawn on animation frames (the board at most four times a second), so a race
// of 1,000 racers does not freeze the browser. When the socket drops the page says so,
// reconnects with backoff, and resumes the race from the last update sequence it applied.
'use strict';

const SUBPROTOCOL = 'peloton.v1.json';
const BOARD_EVERY_MS = 250;
const LABEL_ALL_UP_TO = 150;
const $ = (id) => document.getElementById(id);

/** Everything the page knows; the screen is drawn from this. */
const model = {
  raceId: new URLSearchParams(location.search).get('race'),
  race: null,
  course: [],
  checkpoints: [],
  names: new Map(),
  rows: new Map(),
  // The race whose snapshot `rows` were built from, and the last update applied on top of
  // it: updates for any other race, or arriving before the snapshot, are not applied, and
  // only a page that holds a snapshot may resume from `seq`.
  base: null,
  seq: null,
  spectators: 0,
  follow: null,
  results: null,
  replay: { active: false, playing: false, speed: 60, from: null, to: null, clock: null, wall: 0, base: 0 },
  mapDirty: true,
  boardDirty: true,
  changed: new Set(),
};
window.peloton = model; // read by the browser tests

// ---- formatting -------------------------------------------------------------------------

const clock = (ms) => {
  if (ms == null) return '–';
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
};
const km = (dm) => (dm / 10000).toFixed(2);
const esc = (text) => String(text ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---- the connection ---------------------------------------------------------------------

/** One socket at a time; requests get promises; drops reconnect with backoff. */
class Connection {
  constructor() {
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.backoff = 500;
    this.token = new URLSearchParams(location.hash.slice(1)).get('token');
    this.shared = this.token != null;
    this.opened = false;
  }

  status(state, text) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text;
  }

  /** A usable token: the share link's, or a fresh guest token when ours is near expiry. */
  async ensureToken() {
    if (this.shared) {
      if (tokenExpiry(this.token) < Date.now()) throw new Error('this share link has expired');
      return this.token;
    }
    if (this.token && tokenExpiry(this.token) - 60_000 > Date.now()) return this.token;
    const response = await fetch('/api/guest-token', { cache: 'no-store' });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || `guest token: HTTP ${response.status}`);
    this.token = body.token;
    return this.token;
  }

  async open() {
    let token;
    try {
      token = await this.ensureToken();
    } catch (e) {
      if (String(e.message).includes('expired') || String(e.message).includes('not public')) {
        this.status('offline', 'cannot watch');
        showMessage(e.message);
        return;
      }
      return this.retry();
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`, SUBPROTOCOL);
    this.ws = ws;
    ws.onmessage = (event) => this.onFrame(JSON.parse(event.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const { reject } of this.pending.values()) reject(new Error('connection lost'));
      this.pending.clear();
      this.retry();
    };
  }

  /** Switches to another token (a share link pasted into this tab): reconnects with it. */
  adopt(token) {
    this.token = token;
    this.shared = true;
    if (this.ws) this.ws.close();
    else this.open();
  }

  retry() {
    this.status('reconnecting', 'reconnecting…');
    setTimeout(() => this.open(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 5000);
  }

  onFrame(frame) {
    if (frame.push) {
      if (frame.push.welcome) {
        this.backoff = 500;
        this.status('live', 'connected');
        onConnected();
      } else {
        onPush(frame.push);
      }
      return;
    }
    const answer = frame.reply || frame.error;
    const waiter = answer && this.pending.get(answer.id);
    if (!waiter) return;
    this.pending.delete(answer.id);
    if (frame.reply) waiter.resolve(frame.reply.reply);
    else waiter.reject(Object.assign(new Error(answer.error.message), { code: answer.error.code }));
  }

  request(request) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, request }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
}

/** A JWT's expiry in ms (0 if unreadable): the page never verifies tokens, the server does. */
function tokenExpiry(token) {
  try {
    const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return payload.exp * 1000;
  } catch {
    return 0;
  }
}

const connection = new Connection();

// ---- views ------------------------------------------------------------------------------

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
}

function show(view) {
  $('list-view').hidden = view !== 'list';
  $('race-view').hidden = view !== 'race';
}

/** Runs on every (re)connection: refresh what is on screen. */
function onConnected() {
  if (model.raceId) enterRace(model.raceId, true).catch((e) => showMessage(e.message));
  else loadList().catch((e) => showMessage(e.message));
}

async function loadList() {
  show('list');
  $('title').textContent = '';
  const reply = await connection.request('race_list');
  const races = (reply.races || []).slice().sort((a, b) => b.start_at_ms - a.start_at_ms);
  $('list-empty').hidden = races.length > 0;
  $('races').tBodies[0].innerHTML = races
    .map((r) => `<tr data-race="${esc(r.id)}"><td><a href="?race=${encodeURIComponent(r.id)}">${esc(r.name)}</a></td>`
      + `<td>${esc(r.state)}</td><td>${new Date(r.start_at_ms).toLocaleString()}</td>`
      + `<td>${(r.course_length_m / 1000).toFixed(1)}</td></tr>`)
    .join('');
}

$('races').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-race]');
  if (!row) return;
  event.preventDefault();
  navigate(row.dataset.race);
});

$('home').addEventListener('click', (event) => {
  if (connection.shared) return; // a share link only reaches its race
  event.preventDefault();
  navigate(null);
});

// Back, forward, or a new fragment: only a different race starts over; the same race keeps
// its rows and live updates.
window.addEventListener('popstate', () => {
  const raceId = new URLSearchParams(location.search).get('race');
  if (raceId === model.raceId) return;
  model.raceId = raceId;
  resetRace();
  onConnected();
});

window.addEventListener('hashchange', () => {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token && token !== connection.token) connection.adopt(token);
});

function navigate(raceId) {
  const url = raceId ? `?race=${encodeURIComponent(raceId)}${location.hash}` : `/${location.hash}`;
  history.pushState(null, '', url);
  model.raceId = raceId;
  resetRace();
  onConnected();
}

function resetRace() {
  Object.assign(model, { race: null, course: [], checkpoints: [], base: null, seq: null, results: null, follow: null });
  model.rows.clear();
  model.names.clear();
  model.replay.active = false;
  model.replay.playing = false;
  $('racers').innerHTML = '';
  $('results-box').hidden = true;
  $('replay-controls').hidden = true;
  showMessage('');
}

/** Opens a race: its snapshot (or, on a reconnection, what was missed), then its state. */
async function enterRace(raceId, resume) {
  show('race');
  // Decided before any await: an update applied meanwhile must not make a page that holds
  // no snapshot of this race look like one that can resume.
  const since = resume && model.base === raceId ? model.seq : null;
  const race = (await connection.request({ race_get: { id: raceId } })).race;
  model.race = race;
  $('race-name').textContent = race.name;
  $('title').textContent = race.name;
  $('race-state').textContent = race.state;
  const snapshot = (await connection.request({ race_subscribe: { race_id: raceId, since_seq: since } })).subscribed;
  if (raceId !== model.raceId) return; // the spectator went elsewhere meanwhile
  applySnapshot(raceId, snapshot, since);
  if (race.state === 'finished') await showResults(raceId);
}

/** A full snapshot replaces the rows; a resumed one keeps them, and the missed updates that
 * follow it advance `seq` from where the page was (`since`) to the snapshot's. */
function applySnapshot(raceId, snapshot, since) {
  for (const r of snapshot.racers) model.names.set(r.bib, r.name);
  model.spectators = snapshot.spectators;
  if (!snapshot.resumed) {
    model.course = snapshot.course;
    model.checkpoints = snapshot.checkpoints || [];
    model.rows.clear();
    for (const row of snapshot.standings) model.rows.set(row.bib, row);
    drawCourse();
    buildMarkers();
  } else {
    buildMarkers();
  }
  model.base = raceId;
  model.seq = snapshot.resumed ? since : snapshot.seq;
  model.mapDirty = model.boardDirty = true;
  fillFollow();
}

function onPush(push) {
  const tick = push.race_update || push.race_catch_up;
  if (tick) {
    if (tick.race_id !== model.base || model.replay.active) return;
    if (tick.seq <= model.seq) return;
    // A delta continues the update before it; a catch-up (sent when this socket fell a few
    // ticks behind) continues the one it names in `since_seq`.
    const continues = push.race_catch_up
      ? tick.since_seq === model.seq
      : tick.full || tick.seq === model.seq + 1;
    if (!continues) {
      // Rows after a gap (the page ignored updates during a replay, say) would leave stale
      // rows: start again from a snapshot.
      model.base = null;
      enterRace(model.raceId, false).catch((e) => showMessage(e.message));
      return;
    }
    applyTick(tick);
    model.seq = tick.seq;
    model.spectators = tick.spectators;
  } else if (push.replay_tick) {
    if (!model.replay.active || !model.replay.playing) return;
    applyTick(push.replay_tick);
  } else if (push.replay_done) {
    model.replay.playing = false;
    model.replay.clock = model.replay.to;
    $('play').textContent = 'Play replay';
  }
}

/** A full table replaces every row; a delta or a catch-up replaces rows by bib. */
function applyTick(tick) {
  if (tick.full) model.rows.clear();
  let newcomers = tick.full;
  for (const row of tick.standings) {
    newcomers ||= !markers.has(row.bib);
    model.rows.set(row.bib, row);
    model.changed.add(row.bib);
  }
  if (newcomers) buildMarkers();
  model.mapDirty = model.boardDirty = true;
}

async function showResults(raceId) {
  const reply = (await connection.request({ race_results: { race_id: raceId } })).results;
  model.results = reply;
  const s = reply.stats;
  $('stats').textContent = `${s.entrants} entrants, ${s.finishers} finished, ${s.dnf} DNF, ${s.dsq ?? 0} DSQ, ${s.dns} DNS`
    + ` · winner ${clock(s.winning_time_ms)} · median ${clock(s.median_time_ms)}`;
  // As published results: DNF, DSQ and DNS have no place, the # column says which they
  // are, and the status column says why in words.
  const place = (r) => r.rank ?? (['dnf', 'dsq', 'dns'].includes(r.status) ? r.status.toUpperCase() : '–');
  $('results').tBodies[0].innerHTML = reply.rows
    .map((r) => `<tr data-bib="${r.bib}"${r.rank == null ? ' class="unranked"' : ''}><td>${esc(place(r))}</td><td>${r.bib}</td><td>${esc(r.name)}</td><td>${esc(r.team ?? '')}</td>`
      + `<td>${clock(r.time_ms)}</td><td>${r.avg_speed_kmh == null ? '–' : r.avg_speed_kmh.toFixed(1)}</td>`
      + `<td>${r.splits_ms.map(clock).join(' ')}</td><td class="why">${esc(r.reason ?? r.status)}</td></tr>`)
    .join('');
  $('results-box').hidden = false;
  $('replay-controls').hidden = false;
}

// ---- replay -----------------------------------------------------------------------------

function replayClock() {
  const r = model.replay;
  if (!r.playing) return r.clock;
  return Math.min(r.base + (performance.now() - r.wall) * r.speed, r.to ?? Infinity);
}

async function play(from) {
  const r = model.replay;
  r.active = true;
  r.speed = Number($('speed').value);
  const started = (await connection.request({ race_replay: { race_id: model.raceId, speed: r.speed, from_ms: from } })).replay_started;
  r.from = started.from_ms;
  r.to = started.to_ms;
  r.base = Math.max(from ?? r.from, r.from);
  r.wall = performance.now();
  r.playing = true;
  $('play').textContent = 'Pause';
}

async function pause() {
  const r = model.replay;
  r.clock = replayClock();
  r.playing = false;
  $('play').textContent = 'Play replay';
  // A replay from the end finishes at once: the server stops streaming the old one.
  if (r.to != null) await connection.request({ race_replay: { race_id: model.raceId, speed: 1, from_ms: r.to } }).catch(() => {});
}

$('play').addEventListener('click', () => {
  const r = model.replay;
  const action = r.playing ? pause() : play(r.clock != null && r.clock < r.to ? r.clock : null);
  action.catch((e) => showMessage(e.message));
});

$('speed').addEventListener('change', () => {
  if (model.replay.playing) play(replayClock()).catch((e) => showMessage(e.message));
});

$('follow').addEventListener('change', () => {
  model.follow = $('follow').value ? Number($('follow').value) : null;
  model.mapDirty = model.boardDirty = true;
  for (const bib of model.rows.keys()) model.changed.add(bib);
});

$('board').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-bib]');
  if (!row) return;
  const bib = Number(row.dataset.bib);
  model.follow = model.follow === bib ? null : bib;
  $('follow').value = model.follow ?? '';
  model.mapDirty = model.boardDirty = true;
  for (const b of model.rows.keys()) model.changed.add(b);
});

function fillFollow() {
  const bibs = [...model.names.keys()].sort((a, b) => a - b);
  $('follow').innerHTML = '<option value="">nobody</option>'
    + bibs.map((b) => `<option value="${b}">${b} ${esc(model.names.get(b))}</option>`).join('');
  $('follow').value = model.follow ?? '';
}

// ---- drawing ----------------------------------------------------------------------------

/** Equirectangular projection scaled to the course bounds (metres-ish units, y down). */
const view = { minLat: 0, maxLat: 1, minLon: 0, maxLon: 1, k: 1, width: 1, height: 1 };

function project(latE7, lonE7) {
  return [(lonE7 / 1e7 - view.minLon) * view.k, (view.maxLat - latE7 / 1e7) * 111_320];
}

function drawCourse() {
  const pts = model.course;
  if (!pts.length) return;
  const lats = pts.map((p) => p.lat_e7 / 1e7);
  const lons = pts.map((p) => p.lon_e7 / 1e7);
  view.minLat = Math.min(...lats);
  view.maxLat = Math.max(...lats);
  view.minLon = Math.min(...lons);
  view.maxLon = Math.max(...lons);
  view.k = 111_320 * Math.cos(((view.minLat + view.maxLat) / 2) * Math.PI / 180);
  view.width = Math.max((view.maxLon - view.minLon) * view.k, 1);
  view.height = Math.max((view.maxLat - view.minLat) * 111_320, 1);
  $('course').setAttribute('points', pts.map((p) => project(p.lat_e7, p.lon_e7).map((v) => v.toFixed(1)).join(',')).join(' '));
  const size = Math.max(view.width, view.height);
  $('checkpoints').innerHTML = model.checkpoints
    .map((c) => {
      const [x, y] = project(c.lat_e7, c.lon_e7);
      return `<g data-checkpoint="${esc(c.name)}"><circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${(size / 150).toFixed(1)}"></circle>`
        + `<text x="${(x + size / 100).toFixed(1)}" y="${y.toFixed(1)}" font-size="${(size / 60).toFixed(1)}">${esc(c.name)}</text></g>`;
    })
    .join('');
  setViewBox();
}

function setViewBox() {
  const pad = Math.max(view.width, view.height) * 0.04;
  let [x, y, w, h] = [-pad, -pad, view.width + 2 * pad, view.height + 2 * pad];
  const followed = model.follow != null && model.rows.get(model.follow);
  if (followed && followed.lat_e7) {
    const [fx, fy] = project(followed.lat_e7, followed.lon_e7);
    w /= 5; h /= 5;
    x = fx - w / 2; y = fy - h / 2;
  }
  $('map').setAttribute('viewBox', `${x.toFixed(1)} ${y.toFixed(1)} ${w.toFixed(1)} ${h.toFixed(1)}`);
}

/** One marker per racer, created once; moving a racer only changes its transform. */
const markers = new Map();

function buildMarkers() {
  const layer = $('racers');
  const size = Math.max(view.width, view.height);
  for (const bib of model.rows.keys()) {
    if (markers.has(bib) && markers.get(bib).isConnected) continue;
    const g = document.createElementNS('http://www.w3.org/2000/svg', 'g');
    g.setAttribute('class', 'racer');
    g.dataset.bib = bib;
    g.innerHTML = `<circle r="${(size / 200).toFixed(1)}"></circle><text x="${(size / 120).toFixed(1)}" font-size="${(size / 70).toFixed(1)}">${bib}</text>`;
    layer.appendChild(g);
    markers.set(bib, g);
    model.changed.add(bib);
  }
  for (const [bib, g] of markers) {
    if (!model.rows.has(bib)) {
      g.remove();
      markers.delete(bib);
    }
  }
}

function drawMap() {
  const many = model.rows.size > LABEL_ALL_UP_TO;
  for (const bib of model.changed) {
    const row = model.rows.get(bib);
    const g = markers.get(bib);
    if (!row || !g) continue;
    const placed = row.lat_e7 !== 0 || row.lon_e7 !== 0;
    g.style.display = placed ? '' : 'none';
    if (placed) {
      const [x, y] = project(row.lat_e7, row.lon_e7);
      g.setAttribute('transform', `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
    }
    let cls = 'racer';
    if (row.off_course) cls += ' off';
    if (row.finished_at_ms != null) cls += ' done';
    if (bib === model.follow) cls += ' followed';
    if (many && row.rank > 20 && bib !== model.follow) cls += ' hidden-label';
    g.setAttribute('class', cls);
  }
  model.changed.clear();
  setViewBox();
}

function drawBoard() {
  const rows = [...model.rows.values()].sort((a, b) => a.rank - b.rank);
  $('board').tBodies[0].innerHTML = rows
    .map((r) => {
      const cls = [r.off_course ? 'off' : '', r.finished_at_ms != null ? 'done' : '', r.bib === model.follow ? 'followed' : ''].join(' ').trim();
      const gap = r.gap_ms == null ? '–' : r.gap_ms === 0 ? '' : `+${clock(r.gap_ms)}`;
      const speed = r.speed_cmps == null ? '–' : (r.speed_cmps * 0.036).toFixed(1);
      const flag = r.off_course ? 'off course' : r.finished_at_ms != null ? 'finished' : '';
      return `<tr data-bib="${r.bib}" class="${cls}"><td>${r.rank}</td><td class="bib">${r.bib}</td><td>${esc(model.names.get(r.bib) ?? '')}</td>`
        + `<td>${km(r.progress_dm)}</td><td>${gap}</td><td>${speed}</td><td>${r.finished_at_ms != null ? '' : clock(r.eta_ms)}</td><td>${flag}</td></tr>`;
    })
    .join('');
  $('spectators').textContent = model.replay.active ? 'replay' : `${model.spectators} watching`;
}

let lastBoard = 0;
function frame(now) {
  if (model.mapDirty) {
    drawMap();
    model.mapDirty = false;
  }
  if (model.boardDirty && now - lastBoard >= BOARD_EVERY_MS) {
    drawBoard();
    model.boardDirty = false;
    lastBoard = now;
  }
  if (model.replay.active) {
    const t = replayClock();
    $('clock').textContent = t == null || model.replay.from == null ? '' : `race time ${clock(t - model.replay.from)}`;
  }
  requestAnimationFrame(frame);
}

requestAnimationFrame(frame);
connection.open();
