// Peloton racer page (/ride).
//
// A racer opens a personal link, /ride#token=<racer token>, on a phone; no app is needed.
// The page is a client like any other (PROTOCOL.md): it speaks the JSON subprotocol
// (peloton.v1.json) over /ws with the racer token, which names the race (`race` claim) and the
// bib (`sub`). On Start it watches the phone's GPS and keeps the screen awake; every position
// goes into IndexedDB first, so positions survive tunnels, dead zones, reloads and server
// restarts, and is uploaded from there with `fixes` requests, one batch in flight at a time.
// A batch leaves IndexedDB only when the server's `fixes_ack` answers it: accepted or
// ignored, it is done (the server ignores fixes not newer than its last one, so a resend after
// a lost reply is harmless and nothing is resent forever). The race subscription shows the
// racer's place, gap, distance to go, an off-course warning, the finish and the result.
// The same file is the page's service worker, which keeps a copy of the page for opening it
// without a network (see "offline copy" below).
'use strict';

const SUBPROTOCOL = 'peloton.v1.json';
// Most fixes in one `fixes` request: far below tracking.max_fixes_per_batch (3,600), and at
// about 130 bytes a fix in JSON well below ws.max_message_bytes (64 KiB) for a racer socket.
const MAX_BATCH = 300;
// The server's default tracking.max_accuracy_m: rougher fixes do not move the racer.
const POOR_ACCURACY_M = 50;
// A request unanswered this long is treated as lost: the socket is dropped and the batch is
// sent again on the next one (messages refused by the rate limiter may get no answer at all).
const REQUEST_TIMEOUT_MS = 15_000;
// Pause before trying a refused upload again (server busy, rate limited, race not live yet).
const RETRY_MS = 3000;
// How often the race's state is read again while it is not over: ticks do not carry it.
const STATE_POLL_MS = 15_000;
const FINAL_STATES = ['finished', 'cancelled'];
const $ = (id) => document.getElementById(id);

// ---- the model ----------------------------------------------------------------------------

/** Everything the page knows; the screen is drawn from it, and browser tests read it. */
const ride = {
  status: 'connecting',
  raceId: null,
  bib: null,
  race: null,
  name: null,
  entrants: 0,
  // The race subscription: the snapshot's race, the last update applied, this racer's row.
  base: null,
  seq: null,
  row: null,
  rank: null,
  gapMs: null,
  toGoM: null,
  offCourse: false,
  finished: false,
  finishedAtMs: null,
  finishTimeMs: null,
  // This bib's results row and the race's statistics; final once the race is finished.
  result: null,
  resultStats: null,
  resultFinal: false,
  // The GPS: whether the page watches it, its last accuracy, and what is wrong with it.
  tracking: false,
  accuracyM: null,
  gps: null,
  wakeLock: 'none',
  // The upload queue, persisted with it: positions taken, waiting, answered by the server
  // (accepted or ignored), and given up on (refused for good: race over, bad device time).
  storage: 'indexeddb',
  queued: 0,
  taken: 0,
  acked: 0,
  accepted: 0,
  ignored: 0,
  discarded: 0,
  lastAckAtMs: null,
  // Device times of the positions this page took since it loaded, oldest first, and the
  // newest of them in full.
  takenAt: [],
  lastFix: null,
  // The interval the server asks this device to report at (its `pace` push) and why; a
  // position sooner than that after the last one taken is left out, to save battery and
  // data where it would change nothing (the server asks for every second where it does).
  paceMs: null,
  paceReason: null,
  pacedOut: 0,
};

// ---- formatting -------------------------------------------------------------------------

const clock = (ms) => {
  if (ms == null) return '–';
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
};
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

/** A JWT's claims, or null if unreadable: the page never verifies tokens, the server does. */
function claims(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

// ---- the connection ---------------------------------------------------------------------

/** One socket at a time; requests get promises; drops reconnect with backoff. */
class Connection {
  constructor(token) {
    this.token = token;
    this.ws = null;
    this.ready = false;
    this.nextId = 1;
    this.pending = new Map();
    this.backoff = 500;
    this.retryTimer = null;
  }

  status(state, text) {
    ride.status = state;
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text;
  }

  open() {
    this.retryTimer = null;
    const exp = claims(this.token)?.exp;
    if (exp != null && exp * 1000 < Date.now()) {
      this.status('offline', 'link expired');
      showMessage('This racer link has expired. Ask the organiser for a new one; positions already taken stay on this phone.');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(this.token)}`, SUBPROTOCOL);
    this.ws = ws;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to understand; the protocol says skip it
      }
      this.onFrame(frame);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.lost();
    };
  }

  /** The socket is gone (closed by either side, or given up on): fail what waits, retry. */
  lost() {
    this.ws = null;
    this.ready = false;
    for (const { reject } of this.pending.values()) reject(new Error('connection lost'));
    this.pending.clear();
    this.retry();
    render();
  }

  retry() {
    this.status('reconnecting', 'reconnecting…');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 5000);
  }

  /** Connects at once if waiting to (the phone is back online, the page is visible again). */
  now() {
    if (this.ws || this.retryTimer == null) return;
    clearTimeout(this.retryTimer);
    this.backoff = 500;
    this.open();
  }

  /** Gives up on the socket (a request went unanswered): a new one is opened. */
  drop() {
    const ws = this.ws;
    if (!ws) return;
    this.lost();
    ws.close();
  }

  onFrame(frame) {
    if (frame.push) {
      if (frame.push.welcome) {
        this.backoff = 500;
        this.ready = true;
        this.status('live', 'connected');
        onConnected(frame.push.welcome);
      } else {
        onPush(frame.push);
      }
      return;
    }
    const answer = frame.reply || frame.error;
    if (!answer) return;
    // An error without an id (rate limited, unreadable) answers the oldest request: the
    // server answers one socket's messages in order.
    const id = answer.id ?? this.pending.keys().next().value;
    const waiter = this.pending.get(id);
    if (!waiter) return;
    this.pending.delete(id);
    if (frame.reply) waiter.resolve(frame.reply.reply);
    else waiter.reject(Object.assign(new Error(answer.error.message), { code: answer.error.code }));
  }

  request(request) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, request }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.pending.delete(id)) return;
        reject(Object.assign(new Error('the server did not answer'), { code: 'timeout' }));
        this.drop();
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (value) => { clearTimeout(timer); resolve(value); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
    });
  }
}

// ---- the queue of positions -------------------------------------------------------------

const promised = (req) => new Promise((resolve, reject) => {
  req.onsuccess = () => resolve(req.result);
  req.onerror = () => reject(req.error);
});
const committed = (tx) => new Promise((resolve, reject) => {
  tx.oncomplete = () => resolve();
  tx.onerror = () => reject(tx.error);
  tx.onabort = () => reject(tx.error || new Error('storage transaction aborted'));
});

/**
 * Positions waiting for the server, oldest first, in IndexedDB (one database per race and
 * bib), with the counters beside them in the same transactions. Without IndexedDB (a private
 * window may refuse it) the queue lives in memory and the page says so.
 */
class Queue {
  constructor(name) {
    this.name = name;
    this.db = null;
    this.memory = null;
    this.nextId = 1;
    this.counts = { taken: 0, acked: 0, accepted: 0, ignored: 0, discarded: 0, lastAtMs: null };
    this.size = 0;
  }

  async open() {
    try {
      this.db = await new Promise((resolve, reject) => {
        const req = indexedDB.open(this.name, 1);
        req.onupgradeneeded = () => {
          req.result.createObjectStore('fixes', { keyPath: 'id', autoIncrement: true });
          req.result.createObjectStore('meta');
        };
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
        req.onblocked = () => reject(new Error('storage is blocked by another tab'));
      });
      const tx = this.db.transaction(['fixes', 'meta']);
      const [size, counts] = await Promise.all([
        promised(tx.objectStore('fixes').count()),
        promised(tx.objectStore('meta').get('counts')),
      ]);
      this.size = size;
      if (counts) Object.assign(this.counts, counts);
    } catch (e) {
      this.db = null;
      this.memory = [];
      ride.storage = 'memory';
      showMessage(`This browser will not store positions (${e.message || e}); they are kept only while this page stays open.`);
    }
    this.publish();
  }

  publish() {
    Object.assign(ride, {
      queued: this.size,
      taken: this.counts.taken,
      acked: this.counts.acked,
      accepted: this.counts.accepted,
      ignored: this.counts.ignored,
      discarded: this.counts.discarded,
    });
  }

  /** Stores a fix; false if it is not newer than the last one stored (a repeat). */
  async add(fix) {
    if (this.counts.lastAtMs != null && fix.at_ms <= this.counts.lastAtMs) return false;
    // Counters change before the write so that overlapping writes each store the newest;
    // IndexedDB commits them in the order they were started.
    const before = { ...this.counts };
    this.counts.taken += 1;
    this.counts.lastAtMs = fix.at_ms;
    const snapshot = { ...this.counts };
    if (this.db) {
      try {
        const tx = this.db.transaction(['fixes', 'meta'], 'readwrite');
        tx.objectStore('fixes').add({ fix });
        tx.objectStore('meta').put(snapshot, 'counts');
        await committed(tx);
      } catch (e) {
        this.counts.taken -= 1;
        if (this.counts.lastAtMs === fix.at_ms) this.counts.lastAtMs = before.lastAtMs;
        throw e;
      }
    } else {
      this.memory.push({ id: this.nextId++, fix });
    }
    this.size += 1;
    this.publish();
    return true;
  }

  /** Up to `n` of the oldest waiting fixes, with their keys. */
  async oldest(n) {
    if (!this.db) return this.memory.slice(0, n);
    const tx = this.db.transaction('fixes');
    return promised(tx.objectStore('fixes').getAll(null, n));
  }

  /** Removes `records` as done, adding `change` to the counters in the same transaction. */
  async settle(records, change) {
    for (const [k, v] of Object.entries(change)) this.counts[k] += v;
    const snapshot = { ...this.counts };
    if (this.db) {
      const tx = this.db.transaction(['fixes', 'meta'], 'readwrite');
      const store = tx.objectStore('fixes');
      for (const r of records) store.delete(r.id);
      tx.objectStore('meta').put(snapshot, 'counts');
      try {
        await committed(tx);
      } catch (e) {
        for (const [k, v] of Object.entries(change)) this.counts[k] -= v;
        throw e;
      }
    } else {
      const done = new Set(records.map((r) => r.id));
      this.memory = this.memory.filter((r) => !done.has(r.id));
    }
    this.size -= records.length;
    this.publish();
  }
}

// ---- uploading --------------------------------------------------------------------------

/**
 * Sends the queue to the server, one batch in flight at a time, so a fix is never in two
 * requests at once; the next batch goes when the previous one is answered.
 */
const uploader = {
  busy: false,
  // Asked to pump while busy: pump once more when the current batch is done.
  again: false,
  timer: null,
  // Batch size: halved around a batch the server refuses as a whole (a bad device time), so
  // the one bad fix is found and dropped instead of holding back the good ones.
  limit: MAX_BATCH,
  // Why uploading has stopped for good on this page (a link that cannot send fixes).
  blocked: null,
  note: '',

  kick(delay = 0) {
    if (this.timer != null) {
      if (delay > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, delay);
  },

  async pump() {
    if (this.blocked || !connection.ready || !queue) return;
    if (this.busy) {
      // A fix stored while a batch was being read or sent: look again when it is done.
      this.again = true;
      return;
    }
    this.busy = true;
    this.again = false;
    let next = null;
    try {
      next = await this.sendBatch();
    } catch (e) {
      this.note = `upload problem: ${e.message || e}`;
      next = RETRY_MS;
    } finally {
      this.busy = false;
    }
    if (next == null && this.again && !this.blocked) next = 0;
    if (next != null) this.kick(next);
    render();
  },

  /** One batch: the delay before the next (null: wait for a new fix or a new socket). */
  async sendBatch() {
    const batch = await queue.oldest(this.limit);
    if (!batch.length) {
      this.limit = MAX_BATCH;
      return null;
    }
    let reply;
    try {
      reply = await connection.request({ fixes: { fixes: batch.map((r) => r.fix) } });
    } catch (e) {
      return this.refused(batch, e);
    }
    const ack = reply.fixes_ack;
    if (!ack) return RETRY_MS;
    // Accepted or ignored (a resend, a fix outside the rules, after the finish): done.
    await queue.settle(batch, { acked: batch.length, accepted: ack.accepted, ignored: ack.ignored });
    if (ack.last_at_ms != null) ride.lastAckAtMs = ack.last_at_ms;
    this.limit = Math.min(this.limit * 2, MAX_BATCH);
    this.note = '';
    return 0;
  },

  async refused(batch, error) {
    switch (error.code) {
      case undefined:
        return null; // the socket went away: the next one starts uploading again
      case 'invalid_transition': {
        // The race is not live: over (these fixes can never count), or not started yet
        // (they will: the server takes fixes from before the start).
        const race = (await connection.request({ race_get: { id: ride.raceId } })).race;
        setRace(race);
        if (FINAL_STATES.includes(race.state)) {
          await queue.settle(batch, { discarded: batch.length });
          return 0;
        }
        this.note = 'positions wait until the race starts';
        return 10_000;
      }
      case 'bad_time':
      case 'invalid_argument':
        if (batch.length > 1) {
          this.limit = Math.ceil(batch.length / 2);
          return 0;
        }
        await queue.settle(batch, { discarded: 1 });
        if (error.code === 'bad_time') {
          showGps('clock', 'This phone\'s clock is wrong, so the server refused a position. Set the date and time to automatic.');
        }
        return 100;
      case 'not_found':
        this.note = `bib ${ride.bib} is not registered in this race yet; ask the organiser. Positions stay on this phone.`;
        return 30_000;
      case 'forbidden':
      case 'unauthenticated':
      case 'token_expired':
        this.blocked = error.message;
        showMessage(`This link cannot send positions: ${error.message}. Ask the organiser for your racer link.`);
        return null;
      default:
        this.note = `the server is busy (${error.code}); trying again`;
        return RETRY_MS;
    }
  },
};

// ---- the GPS and the screen -------------------------------------------------------------

/** Keeps the screen on while tracking where the browser can (Screen Wake Lock API). */
const wake = {
  lock: null,
  wanted: false,

  async acquire() {
    this.wanted = true;
    if (!('wakeLock' in navigator)) {
      ride.wakeLock = 'unsupported';
      return render();
    }
    if (this.lock || document.visibilityState !== 'visible') return;
    try {
      const lock = await navigator.wakeLock.request('screen');
      this.lock = lock;
      ride.wakeLock = 'held';
      lock.addEventListener('release', () => {
        if (this.lock === lock) this.lock = null;
        ride.wakeLock = 'released';
        render();
      });
    } catch {
      ride.wakeLock = 'refused';
    }
    render();
  },

  release() {
    this.wanted = false;
    const lock = this.lock;
    this.lock = null;
    ride.wakeLock = 'none';
    if (lock) lock.release().catch(() => {});
  },
};

/** The geolocation watch; the choice to track survives a reload (per race and bib). */
const tracker = {
  watch: null,
  key: () => `peloton.ride.${ride.raceId}.${ride.bib}.tracking`,

  start() {
    if (!window.isSecureContext) {
      return showGps('unavailable', 'Location only works on a secure (https) page. Ask the organiser for the https link.');
    }
    if (!('geolocation' in navigator)) {
      return showGps('unavailable', 'This browser cannot share its location. Open the link in another browser.');
    }
    if (this.watch != null) return;
    ride.tracking = true;
    showGps(null, 'Waiting for the first GPS position…');
    try {
      localStorage.setItem(this.key(), '1');
    } catch {
      // Only the automatic restart after a reload is lost.
    }
    this.watch = navigator.geolocation.watchPosition(onPosition, onPositionError, {
      enableHighAccuracy: true,
      maximumAge: 0,
    });
    wake.acquire();
    render();
  },

  stop(remember) {
    if (this.watch != null) navigator.geolocation.clearWatch(this.watch);
    this.watch = null;
    ride.tracking = false;
    wake.release();
    if (!remember) {
      try {
        localStorage.removeItem(this.key());
      } catch {
        // Nothing to forget.
      }
    }
    render();
  },

  /** After a reload: tracks again without a tap if the racer had started and may still. */
  async resume() {
    let wanted = false;
    try {
      wanted = localStorage.getItem(this.key()) === '1';
    } catch {
      return;
    }
    if (!wanted || ride.finished || FINAL_STATES.includes(ride.race?.state)) return;
    const permission = await navigator.permissions?.query({ name: 'geolocation' }).catch(() => null);
    if (permission?.state === 'granted') this.start();
  },
};

function onPosition(position) {
  const c = position.coords;
  const fix = {
    at_ms: Math.round(position.timestamp),
    lat_e7: Math.round(c.latitude * 1e7),
    lon_e7: Math.round(c.longitude * 1e7),
    accuracy_dm: Math.min(Math.max(Math.round(c.accuracy * 10), 0), 4_294_967_295),
    speed_cmps: Number.isFinite(c.speed) && c.speed >= 0 ? Math.min(Math.round(c.speed * 100), 4_294_967_295) : null,
    elevation_dm: Number.isFinite(c.altitude) ? Math.max(Math.min(Math.round(c.altitude * 10), 2_147_483_647), -2_147_483_648) : null,
  };
  ride.accuracyM = c.accuracy;
  if (ride.paceMs != null && ride.lastFix && fix.at_ms - ride.lastFix.at_ms < ride.paceMs) {
    ride.pacedOut += 1;
    return;
  }
  if (c.accuracy > POOR_ACCURACY_M) {
    showGps('poor', `GPS accuracy is poor: ±${Math.round(c.accuracy)} m. Positions that rough may not count; get a clear view of the sky.`);
  } else {
    showGps(null, '');
  }
  queue.add(fix)
    .then((stored) => {
      if (!stored) return;
      ride.takenAt.push(fix.at_ms);
      ride.lastFix = fix;
      uploader.kick();
      render();
    })
    .catch((e) => showMessage(`Could not store a position on this phone: ${e.message || e}`));
}

function onPositionError(error) {
  if (error.code === 1) {
    // PERMISSION_DENIED: the watch is dead; the racer must allow location and start again.
    tracker.stop(false);
    showGps('denied', 'Location permission was refused, so your ride is not being tracked. Allow location for this site in your browser settings, then press Start again.');
  } else if (error.code === 2) {
    showGps('unavailable', 'Your position is unavailable (no GPS signal?). Tracking goes on by itself when the signal is back.');
  } else {
    showGps('timeout', 'Still waiting for a GPS position…');
  }
}

/** What is wrong with the GPS (null: nothing), in words shown under the Start button. */
function showGps(kind, text) {
  ride.gps = kind;
  const el = $('gps-message');
  el.textContent = text;
  el.hidden = !text;
  el.dataset.kind = kind ?? '';
}

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
}

// ---- the race ---------------------------------------------------------------------------

/** Runs on every (re)connection: who we are, the race, and the backlog. */
function onConnected(welcome) {
  if (welcome.role !== 'racer' || !welcome.race) {
    uploader.blocked = 'not a racer token';
    showMessage('This link is not a racer link (it has no race and bib). Ask the organiser for your personal link.');
    return;
  }
  ride.bib = Number(welcome.sub);
  ride.raceId = welcome.race;
  enterRace().catch((e) => showMessage(e.message));
  uploader.kick();
}

/** The race, then its subscription: a fresh snapshot, or what was missed since `seq`. */
async function enterRace() {
  const since = ride.base === ride.raceId ? ride.seq : null;
  const race = (await connection.request({ race_get: { id: ride.raceId } })).race;
  setRace(race);
  const snapshot = (await connection.request({ race_subscribe: { race_id: ride.raceId, since_seq: since } })).subscribed;
  setRace(snapshot.race);
  const me = snapshot.racers.find((r) => r.bib === ride.bib);
  ride.name = me ? me.name : null;
  ride.entrants = snapshot.racers.length;
  if (!snapshot.resumed) setRow(snapshot.standings.find((r) => r.bib === ride.bib) ?? null);
  ride.base = ride.raceId;
  ride.seq = snapshot.resumed ? since : snapshot.seq;
  if (!me) showMessage(`Bib ${ride.bib} is not on this race's start list yet. Positions are kept until it is.`);
  if (ride.finished || race.state === 'finished') await loadResult();
  render();
}

function onPush(push) {
  if (push.pace) {
    ride.paceMs = push.pace.interval_ms;
    ride.paceReason = push.pace.reason;
    render();
    return;
  }
  const tick = push.race_update;
  if (!tick || tick.race_id !== ride.base || tick.seq <= ride.seq) return;
  if (!tick.full && tick.seq !== ride.seq + 1) {
    // A delta after a gap could hide this racer's latest row: start from a snapshot.
    ride.base = null;
    enterRace().catch((e) => showMessage(e.message));
    return;
  }
  ride.seq = tick.seq;
  const row = tick.standings.find((r) => r.bib === ride.bib);
  if (row) setRow(row);
  else if (tick.full) setRow(null);
}

/** A new race view: its state decides whether tracking still makes sense. */
function setRace(race) {
  const was = ride.race?.state;
  ride.race = race;
  if (race.state !== was && FINAL_STATES.includes(race.state)) {
    if (ride.tracking) tracker.stop(false);
    if (race.state === 'finished') loadResult().catch(() => {});
  }
  render();
}

/** This racer's standings row (null: no position yet). */
function setRow(row) {
  ride.row = row;
  ride.rank = row ? row.rank : null;
  ride.gapMs = row ? row.gap_ms : null;
  ride.offCourse = Boolean(row && row.off_course);
  ride.toGoM = row && ride.race ? Math.max(ride.race.course_length_m - row.progress_dm / 10, 0) : null;
  if (row && row.finished_at_ms != null && !ride.finished) {
    ride.finished = true;
    ride.finishedAtMs = row.finished_at_ms;
    ride.finishTimeMs = ride.race ? row.finished_at_ms - ride.race.start_at_ms : null;
    // The server ignores positions after the finish: stop the GPS and let the screen sleep.
    tracker.stop(false);
    loadResult().catch(() => {});
    // With every racer in, the race finishes by itself: read its state again soon.
    setTimeout(pollState, 1500);
  }
  render();
}

/** This bib's row of the results: provisional while the race is live, final after. */
async function loadResult() {
  const reply = (await connection.request({ race_results: { race_id: ride.raceId } })).results;
  ride.result = reply.rows.find((r) => r.bib === ride.bib) ?? null;
  ride.resultStats = reply.stats;
  ride.resultFinal = ride.race?.state === 'finished';
  render();
}

function pollState() {
  if (!connection.ready || !ride.raceId) return;
  const state = ride.race?.state;
  if (state === 'cancelled' || (state === 'finished' && ride.resultFinal)) return;
  connection.request({ race_get: { id: ride.raceId } })
    .then((reply) => setRace(reply.race))
    .catch(() => {});
}

// ---- drawing ----------------------------------------------------------------------------

let drawQueued = false;
function render() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(draw);
}

function draw() {
  drawQueued = false;
  const race = ride.race;
  $('race-name').textContent = race ? race.name : '…';
  $('title').textContent = race ? race.name : '';
  $('race-state').textContent = race ? race.state : '';
  $('bib').textContent = ride.bib ?? '';
  $('rider-name').textContent = ride.name ?? '';

  const start = $('start');
  const over = ride.finished || (race && FINAL_STATES.includes(race.state));
  start.dataset.tracking = String(ride.tracking);
  start.disabled = !ride.bib || !queueReady || over;
  start.textContent = over ? (ride.finished ? 'Finished' : 'Race over') : ride.tracking ? 'Tracking · tap to stop' : 'Start';

  $('off-course').hidden = !ride.offCourse || ride.finished;
  $('rank').textContent = ride.rank == null ? '–' : `${ride.rank}${ride.entrants ? ` / ${ride.entrants}` : ''}`;
  $('gap').textContent = ride.gapMs == null ? '–' : ride.gapMs === 0 ? 'leader' : `+${clock(ride.gapMs)}`;
  $('to-go').textContent = ride.toGoM == null ? '–' : `${(ride.toGoM / 1000).toFixed(2)} km`;

  $('finish').hidden = !ride.finished;
  $('finish-time').textContent = ride.finished ? clock(ride.finishTimeMs) : '';

  const r = ride.result;
  $('result').hidden = !r;
  if (r) {
    const place = r.rank != null ? `Place ${r.rank}` : r.status.toUpperCase();
    const parts = [place];
    if (r.time_ms != null) parts.push(clock(r.time_ms));
    if (r.avg_speed_kmh != null) parts.push(`${r.avg_speed_kmh.toFixed(1)} km/h`);
    if (r.reason) parts.push(r.reason);
    $('result-text').textContent = `${ride.resultFinal ? '' : 'Provisional: '}${parts.join(' · ')}`;
  }

  const upload = $('upload');
  upload.dataset.waiting = String(ride.queued > 0);
  let text;
  if (uploader.blocked) text = `${plural(ride.queued, 'position', 'positions')} kept on this phone.`;
  else if (ride.queued > 0) {
    text = `${plural(ride.queued, 'position', 'positions')} waiting to upload`
      + (connection.ready ? '…' : ', kept on this phone until the connection is back.');
  } else if (ride.acked > 0) text = `All ${plural(ride.acked, 'position', 'positions')} are on the server.`;
  else text = ride.tracking ? 'No position yet.' : 'Press Start at the start line.';
  if (uploader.note) text += ` (${uploader.note})`;
  if (ride.tracking && ride.paceMs != null) {
    text += ` Reporting every ${Math.round(ride.paceMs / 1000)} s (${ride.paceReason}), as the server asks.`;
  }
  if (ride.tracking && ['unsupported', 'refused'].includes(ride.wakeLock)) {
    text += ' This browser cannot keep the screen on: keep it on yourself, tracking may pause when it locks.';
  }
  upload.textContent = text;
}

// ---- offline copy of the page -----------------------------------------------------------

// This same file is also the page's service worker (scope /ride). It keeps a copy of the
// page's files so that the page still opens where it cannot reach the server (a reload in a
// dead zone, the server being restarted) and its queue goes on filling. Network first: a page
// that reaches the server always gets the current files.
const OFFLINE_CACHE = 'peloton-ride-v1';
const OFFLINE_FILES = ['/ride', '/ride.js', '/ride.css', '/style.css'];
// How long a slow network may keep the racer from the stored copy.
const NETWORK_WAIT_MS = 4000;

function offlineWorker() {
  self.addEventListener('install', (event) => {
    event.waitUntil(caches.open(OFFLINE_CACHE)
      .then((cache) => cache.addAll(OFFLINE_FILES))
      .then(() => self.skipWaiting()));
  });
  self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
  self.addEventListener('fetch', (event) => {
    const url = new URL(event.request.url);
    if (event.request.method !== 'GET' || url.origin !== self.location.origin || !OFFLINE_FILES.includes(url.pathname)) return;
    event.respondWith(fromNetworkOrCopy(event.request, url.pathname));
  });
}

async function fromNetworkOrCopy(request, path) {
  const cache = await caches.open(OFFLINE_CACHE);
  const network = fetch(request);
  const response = await Promise.race([
    network.catch(() => null),
    new Promise((resolve) => setTimeout(resolve, NETWORK_WAIT_MS, null)),
  ]);
  if (response && response.ok) {
    await cache.put(path, response.clone()).catch(() => {});
    return response;
  }
  const copy = await cache.match(path);
  if (copy) return copy;
  // No copy yet: behave as if there were no worker.
  return response ?? network;
}

// ---- start ------------------------------------------------------------------------------

let queue = null;
// The Start button waits for the queue: a position must have somewhere to go.
let queueReady = false;
let connection = null;

/** The page: the model for tests, the controls, the queue, then the connection. */
async function page() {
  window.ride = ride; // read by the browser tests
  window.peloton = ride;
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  const tokenClaims = token ? claims(token) : null;
  connection = new Connection(token);

  $('start').addEventListener('click', () => {
    if (!ride.tracking) tracker.start();
    else if (window.confirm('Stop tracking your ride?')) tracker.stop(false);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    // The system drops the wake lock when the page is hidden; take it again on return.
    if (wake.wanted) wake.acquire();
    connection.now();
    uploader.kick();
  });
  window.addEventListener('online', () => connection.now());
  // A new link pasted into this tab may be another race or bib, with its own queue.
  window.addEventListener('hashchange', () => location.reload());
  setInterval(pollState, STATE_POLL_MS);
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('/ride.js', { scope: '/ride' }).catch(() => {});
  }

  if (!token || !tokenClaims || tokenClaims.role !== 'racer' || !tokenClaims.race) {
    connection.status('offline', 'no racer link');
    showMessage('Open this page from your personal racer link (it ends in #token=…). Ask the organiser if you have none.');
    return;
  }
  ride.raceId = tokenClaims.race;
  ride.bib = Number(tokenClaims.sub);
  queue = new Queue(`peloton-ride-${ride.raceId}-${ride.bib}`);
  await queue.open();
  queueReady = true;
  render();
  connection.open();
  await tracker.resume();
}

if (typeof document === 'undefined') offlineWorker();
else page().catch((e) => showMessage(e.message || String(e)));
