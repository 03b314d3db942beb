//! Patrol proximity: how fast the H3 proximity index answers "officers near me" and absorbs
//! position updates, against Redis GEO commands on the same points in the same run.
//!
//! Why: every citizen query and every officer fix goes through
//! `peloton::actors::patrol::proximity::ProximityIndex` directly from its session; this
//! checks it against the usual off-the-shelf answer (a Redis sorted set with GEOSEARCH).
//!
//! Run: `cargo bench --bench proximity` (defaults: OFFICERS=100000, QUERIES=20000 per
//! measurement, SECONDS=2 cap per measurement, 5 rounds; well under 2 minutes on 2 cores).
//! `cargo test --benches` runs a tiny smoke instead.
//!
//! Set-up: OFFICERS points uniform in a 20 km × 20 km square around Paris (48.8566,
//! 2.3522), index at H3 resolution 9 (≈ 200 m edges). Query points are uniform in the same
//! square, the same for every measurement and for Redis. Single thread throughout.
//! Measured, each round:
//! - `nearest(q, 5, 5000 m)`: queries/s and p50/p99 latency;
//! - `within(q, 1000 m)`: queries/s (≈ 785 officers per answer, each with its exact
//!   geodesic distance);
//! - `upsert`: updates/s on a random walk (a random officer moves 0–30 m in a random
//!   direction; the fraction that changes cell is printed);
//! - memory: RSS growth (VmRSS) while building one index of OFFICERS, ÷ OFFICERS; five
//!   indexes are built and kept alive so each build gets fresh pages.
//!
//! Baseline (if `redis-server` is on PATH): started here on 127.0.0.1 on a free port with
//! `--save '' --appendonly no`, spoken to in RESP over a plain `TcpStream`. The same points
//! are GEOADDed (pipelined), then `GEOSEARCH key FROMLONLAT lon lat BYRADIUS 5000 m ASC
//! COUNT 5` for the same query points (a) one request at a time, round trip included, and
//! (b) pipelined 64 deep, and (c) one at a time with the radius grown client-side the way
//! `nearest` does (400 m, doubled until 5 are found or 5 km), since a fixed 5 km radius makes
//! Redis collect and sort every officer within 5 km; GEOADD of the same walk, pipelined 64 deep; memory as Redis's
//! `used_memory` growth ÷ OFFICERS. Redis is killed by its PID at the end, also on errors.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peloton::actors::patrol::proximity::ProximityIndex;
use peloton::geo::Position;

const ROUNDS: usize = 5;
const CENTRE: (f64, f64) = (48.8566, 2.3522);
const HALF_SIDE_M: f64 = 10_000.0;
const RESOLUTION: u8 = 9;
const NEAREST_N: usize = 5;
const NEAREST_MAX_M: f64 = 5_000.0;
const WITHIN_M: f64 = 1_000.0;
const STEP_MAX_M: f64 = 30.0;
const PIPELINE: usize = 64;
/// Where `nearest` starts at resolution 9 (two average edges), for the Redis client that
/// grows its radius the same way.
const GROW_START_M: f64 = 400.0;

type Result<T> = std::result::Result<T, String>;

/// xorshift64*: reproducible points without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n.saturating_sub(1))
    }

    fn city_point(&mut self) -> Position {
        let centre = Position::from_degrees(CENTRE.0, CENTRE.1).unwrap_or(Position {
            lat_e7: 0,
            lon_e7: 0,
        });
        let east = (self.next() * 2.0 - 1.0) * HALF_SIDE_M;
        let north = (self.next() * 2.0 - 1.0) * HALF_SIDE_M;
        centre.moved_m(east, north)
    }
}

struct Config {
    officers: usize,
    queries: usize,
    seconds: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v} is not a valid number")),
        Err(_) => Ok(default),
    }
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_string())
}

fn percentile(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ns.len() - 1) as f64 * p).round() as usize;
    sorted_ns[i] as f64 / 1_000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// One round's figures; NaN where not measured.
#[derive(Clone, Copy)]
struct Round {
    nearest_qps: f64,
    nearest_p50_us: f64,
    nearest_p99_us: f64,
    within_qps: f64,
    within_found: f64,
    update_ps: f64,
    cross_fraction: f64,
    bytes_per_officer: f64,
    redis_qps: f64,
    redis_p50_us: f64,
    redis_p99_us: f64,
    redis_pipelined_qps: f64,
    redis_grow_qps: f64,
    redis_grow_p50_us: f64,
    redis_grow_p99_us: f64,
    redis_update_ps: f64,
    redis_bytes_per_officer: f64,
    agreement: f64,
}

impl Round {
    fn empty() -> Round {
        Round {
            nearest_qps: f64::NAN,
            nearest_p50_us: f64::NAN,
            nearest_p99_us: f64::NAN,
            within_qps: f64::NAN,
            within_found: f64::NAN,
            update_ps: f64::NAN,
            cross_fraction: f64::NAN,
            bytes_per_officer: f64::NAN,
            redis_qps: f64::NAN,
            redis_p50_us: f64::NAN,
            redis_p99_us: f64::NAN,
            redis_pipelined_qps: f64::NAN,
            redis_grow_qps: f64::NAN,
            redis_grow_p50_us: f64::NAN,
            redis_grow_p99_us: f64::NAN,
            redis_update_ps: f64::NAN,
            redis_bytes_per_officer: f64::NAN,
            agreement: f64::NAN,
        }
    }
}

// ---- Redis over hand-written RESP ----

/// The redis-server child; killed by its PID when dropped, so error paths and panics
/// (unwinding) stop it too.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("redis-server").is_file()))
        .unwrap_or(false)
}

fn start_redis() -> Result<RedisServer> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))?;
    let server = RedisServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = Redis::connect(server.port) {
            if matches!(c.call(&["PING"]), Ok(Reply::Simple(s)) if s == "PONG") {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "redis-server on port {} did not answer PING within 10 s",
                server.port
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug)]
enum Reply {
    Simple(String),
    /// An integer reply (GEOADD's count); its value is not needed here.
    Int,
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

struct Redis {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
}

impl Redis {
    fn connect(port: u16) -> Result<Redis> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let reader = BufReader::with_capacity(1 << 16, s.try_clone().map_err(|e| e.to_string())?);
        Ok(Redis {
            writer: s,
            reader,
            out: Vec::with_capacity(1 << 16),
        })
    }

    fn queue(&mut self, args: &[&str]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.writer
            .write_all(&self.out)
            .map_err(|e| format!("write: {e}"))?;
        self.out.clear();
        Ok(())
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        let n = self
            .reader
            .read_line(&mut l)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("redis closed the connection".into());
        }
        Ok(l.trim_end_matches("\r\n").to_string())
    }

    fn read(&mut self) -> Result<Reply> {
        let l = self.line()?;
        let (kind, rest) = l.split_at(1.min(l.len()));
        let num = || {
            rest.parse::<i64>()
                .map_err(|_| format!("bad RESP line {l:?}"))
        };
        match kind {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => Err(format!("redis error: {rest}")),
            ":" => num().map(|_| Reply::Int),
            "$" => {
                let n = num()?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf)
                    .map_err(|e| format!("read: {e}"))?;
                buf.truncate(n as usize);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let n = num()?;
                let mut items = Vec::with_capacity(n.max(0) as usize);
                for _ in 0..n.max(0) {
                    items.push(self.read()?);
                }
                Ok(Reply::Array(items))
            }
            _ => Err(format!("bad RESP line {l:?}")),
        }
    }

    fn call(&mut self, args: &[&str]) -> Result<Reply> {
        self.queue(args);
        self.flush()?;
        self.read()
    }

    fn used_memory(&mut self) -> Result<u64> {
        match self.call(&["INFO", "memory"])? {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| "no used_memory in INFO".to_string()),
            other => Err(format!("unexpected INFO reply {other:?}")),
        }
    }
}

fn geosearch_args(q: Position, radius_m: f64) -> [String; 11] {
    [
        "GEOSEARCH".into(),
        "officers".into(),
        "FROMLONLAT".into(),
        format!("{:.7}", q.lon()),
        format!("{:.7}", q.lat()),
        "BYRADIUS".into(),
        format!("{radius_m}"),
        "m".into(),
        "ASC".into(),
        "COUNT".into(),
        NEAREST_N.to_string(),
    ]
}

fn queue_geosearch(r: &mut Redis, q: Position) {
    queue_geosearch_within(r, q, NEAREST_MAX_M);
}

fn queue_geosearch_within(r: &mut Redis, q: Position, radius_m: f64) {
    let a = geosearch_args(q, radius_m);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    r.queue(&a);
}

fn queue_geoadd(r: &mut Redis, id: &str, p: Position) {
    let (lon, lat) = (format!("{:.7}", p.lon()), format!("{:.7}", p.lat()));
    r.queue(&["GEOADD", "officers", &lon, &lat, id]);
}

fn names(reply: Reply) -> Result<Vec<String>> {
    match reply {
        Reply::Array(items) => Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            })
            .collect()),
        other => Err(format!("unexpected GEOSEARCH reply {other:?}")),
    }
}

/// Sends `count` commands queued by `each`, `PIPELINE` at a time, reading every reply;
/// stops early at the deadline. Returns how many were done.
fn pipelined(
    r: &mut Redis,
    count: usize,
    deadline: Instant,
    mut each: impl FnMut(&mut Redis, usize),
) -> Result<usize> {
    let mut done = 0;
    while done < count && Instant::now() < deadline {
        let batch = PIPELINE.min(count - done);
        for i in done..done + batch {
            each(r, i);
        }
        r.flush()?;
        for _ in 0..batch {
            r.read()?;
        }
        done += batch;
    }
    Ok(done)
}

// ---- the run ----

fn build(ids: &[String], points: &[Position]) -> Result<ProximityIndex> {
    let index = ProximityIndex::new(RESOLUTION)?;
    for (id, p) in ids.iter().zip(points) {
        index.upsert(id, *p);
    }
    Ok(index)
}

fn walk(rng: &mut Rng, truth: &mut [Position], count: usize) -> Vec<(usize, Position)> {
    (0..count)
        .map(|_| {
            let i = rng.below(truth.len());
            let step = rng.next() * STEP_MAX_M;
            let dir = rng.next() * std::f64::consts::TAU;
            truth[i] = truth[i].moved_m(step * dir.sin(), step * dir.cos());
            (i, truth[i])
        })
        .collect()
}

fn run(cfg: &Config) -> Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ids: Vec<String> = (0..cfg.officers)
        .map(|i| format!("officer-{i:06}"))
        .collect();
    let mut truth: Vec<Position> = (0..cfg.officers).map(|_| rng.city_point()).collect();
    let queries: Vec<Position> = (0..cfg.queries).map(|_| rng.city_point()).collect();
    let cap = Duration::from_secs_f64(cfg.seconds);

    // Memory: five indexes kept alive, so every build takes fresh pages.
    let mut memory = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..ROUNDS {
        let before = rss_kib()?;
        let index = build(&ids, &truth)?;
        let after = rss_kib()?;
        memory.push((after.saturating_sub(before) * 1024) as f64 / cfg.officers as f64);
        kept.push(index);
    }
    let index = kept.swap_remove(0);
    drop(kept);

    let redis = if redis_on_path() {
        let server = start_redis()?;
        let mut conn = Redis::connect(server.port)?;
        let before = conn.used_memory()?;
        let started = Instant::now();
        pipelined(
            &mut conn,
            cfg.officers,
            Instant::now() + Duration::from_secs(3600),
            |r, i| {
                queue_geoadd(r, &ids[i], truth[i]);
            },
        )?;
        let load_s = started.elapsed().as_secs_f64();
        let after = conn.used_memory()?;
        println!(
            "redis-server {} on 127.0.0.1:{} (pid {}): loaded {} officers in {:.2} s",
            redis_version(),
            server.port,
            server.child.id(),
            cfg.officers,
            load_s
        );
        Some((
            server,
            conn,
            after.saturating_sub(before) as f64 / cfg.officers as f64,
        ))
    } else {
        println!("redis-server is not on PATH: the Redis baseline was SKIPPED");
        None
    };
    let (server, mut conn, redis_bytes) = match redis {
        Some((s, c, b)) => (Some(s), Some(c), b),
        None => (None, None, f64::NAN),
    };

    println!(
        "{} officers in a 20 km square, resolution {RESOLUTION}, {} query points, cap {:.1} s per measurement",
        cfg.officers, cfg.queries, cfg.seconds
    );
    println!(
        "round | nearest5 q/s  p50 µs  p99 µs | within1km q/s (found) | updates/s (cross) | redis 1-by-1 q/s p50 p99 | redis pipe q/s | redis grow q/s p50 p99 | redis geoadd/s | agree"
    );
    let mut rounds = Vec::new();
    let mut qi = 0usize;
    for (round, bytes_per_officer) in memory.iter().copied().enumerate() {
        let mut r = Round::empty();
        r.bytes_per_officer = bytes_per_officer;
        r.redis_bytes_per_officer = redis_bytes;

        // (1) nearest 5 within 5 km.
        let mut lat_ns = Vec::with_capacity(cfg.queries);
        let mut ours: Vec<Vec<String>> = Vec::with_capacity(cfg.queries);
        let started = Instant::now();
        for q in &queries {
            let t = Instant::now();
            let found = index.nearest(*q, NEAREST_N, NEAREST_MAX_M);
            lat_ns.push(t.elapsed().as_nanos() as u64);
            ours.push(found.iter().map(|n| n.id.to_string()).collect());
            if started.elapsed() > cap {
                break;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        r.nearest_qps = lat_ns.len() as f64 / elapsed;
        lat_ns.sort_unstable();
        r.nearest_p50_us = percentile(&lat_ns, 0.5);
        r.nearest_p99_us = percentile(&lat_ns, 0.99);

        // (2) within 1 km.
        let started = Instant::now();
        let (mut n, mut found) = (0usize, 0usize);
        while n < queries.len() && started.elapsed() < cap {
            found += index
                .within(queries[(qi + n) % queries.len()], WITHIN_M)
                .len();
            n += 1;
        }
        qi += n;
        r.within_qps = n as f64 / started.elapsed().as_secs_f64();
        r.within_found = found as f64 / n.max(1) as f64;

        // (3) updates on a random walk (generated before timing).
        let moves = walk(&mut rng, &mut truth, 2 * cfg.officers);
        let started = Instant::now();
        let (mut done, mut crossed) = (0usize, 0usize);
        for (i, p) in &moves {
            crossed += usize::from(index.upsert(&ids[*i], *p));
            done += 1;
            if done % 1024 == 0 && started.elapsed() > cap {
                break;
            }
        }
        r.update_ps = done as f64 / started.elapsed().as_secs_f64();
        r.cross_fraction = crossed as f64 / done.max(1) as f64;

        if let Some(conn) = conn.as_mut() {
            // (a) one GEOSEARCH at a time.
            let mut lat_ns = Vec::new();
            let (mut same, mut compared) = (0usize, 0usize);
            let started = Instant::now();
            for (i, q) in queries.iter().enumerate() {
                let t = Instant::now();
                queue_geosearch(conn, *q);
                conn.flush()?;
                let reply = conn.read()?;
                lat_ns.push(t.elapsed().as_nanos() as u64);
                // Our answers came before this round's walk; compare only the first round.
                if round == 0 {
                    compared += 1;
                    same += usize::from(names(reply)? == ours[i]);
                }
                if started.elapsed() > cap || i + 1 >= ours.len() {
                    break;
                }
            }
            r.redis_qps = lat_ns.len() as f64 / started.elapsed().as_secs_f64();
            lat_ns.sort_unstable();
            r.redis_p50_us = percentile(&lat_ns, 0.5);
            r.redis_p99_us = percentile(&lat_ns, 0.99);
            if compared > 0 {
                r.agreement = same as f64 / compared as f64;
            }
            // (c) one at a time, the client growing the radius as `nearest` does: 400 m,
            // doubled until 5 are found or 5 km is reached.
            let mut lat_ns = Vec::new();
            let started = Instant::now();
            for q in &queries {
                let t = Instant::now();
                let mut radius = GROW_START_M;
                loop {
                    queue_geosearch_within(conn, *q, radius);
                    conn.flush()?;
                    let found = names(conn.read()?)?.len();
                    if found >= NEAREST_N || radius >= NEAREST_MAX_M {
                        break;
                    }
                    radius = (radius * 2.0).min(NEAREST_MAX_M);
                }
                lat_ns.push(t.elapsed().as_nanos() as u64);
                if started.elapsed() > cap {
                    break;
                }
            }
            r.redis_grow_qps = lat_ns.len() as f64 / started.elapsed().as_secs_f64();
            lat_ns.sort_unstable();
            r.redis_grow_p50_us = percentile(&lat_ns, 0.5);
            r.redis_grow_p99_us = percentile(&lat_ns, 0.99);
            // (b) pipelined 64 deep.
            let started = Instant::now();
            let n = pipelined(conn, queries.len(), started + cap, |c, i| {
                queue_geosearch(c, queries[i])
            })?;
            r.redis_pipelined_qps = n as f64 / started.elapsed().as_secs_f64();
            // GEOADD of the same walk, pipelined 64 deep.
            let started = Instant::now();
            let n = pipelined(conn, moves.len(), started + cap, |c, k| {
                let (i, p) = moves[k];
                queue_geoadd(c, &ids[i], p);
            })?;
            r.redis_update_ps = n as f64 / started.elapsed().as_secs_f64();
        }
        println!(
            "{round:>5} | {:>12.0} {:>7.1} {:>7.1} | {:>13.0} ({:>5.0}) | {:>9.0} ({:>5.3}) | {:>12.0} {:>7.1} {:>7.1} | {:>14.0} | {:>7.0} {:>6.1} {:>6.1} | {:>14.0} | {:.3}",
            r.nearest_qps,
            r.nearest_p50_us,
            r.nearest_p99_us,
            r.within_qps,
            r.within_found,
            r.update_ps,
            r.cross_fraction,
            r.redis_qps,
            r.redis_p50_us,
            r.redis_p99_us,
            r.redis_pipelined_qps,
            r.redis_grow_qps,
            r.redis_grow_p50_us,
            r.redis_grow_p99_us,
            r.redis_update_ps,
            r.agreement
        );
        rounds.push(r);
    }
    drop(conn);
    drop(server);

    let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    println!("\nmedians of {ROUNDS} rounds:");
    println!(
        "  nearest 5 (max 5 km): {:.0} q/s, p50 {:.1} µs, p99 {:.1} µs",
        m(|r| r.nearest_qps),
        m(|r| r.nearest_p50_us),
        m(|r| r.nearest_p99_us)
    );
    println!(
        "  within 1 km: {:.0} q/s ({:.0} officers per answer)",
        m(|r| r.within_qps),
        m(|r| r.within_found)
    );
    println!(
        "  updates: {:.0} /s, {:.1} % changed cell (steps 0-{STEP_MAX_M} m)",
        m(|r| r.update_ps),
        100.0 * m(|r| r.cross_fraction)
    );
    println!(
        "  memory: {:.0} B per indexed officer (RSS growth)",
        m(|r| r.bytes_per_officer)
    );
    if rounds.iter().any(|r| !r.redis_qps.is_nan()) {
        let (rq, rp, ru) = (
            m(|r| r.redis_qps),
            m(|r| r.redis_pipelined_qps),
            m(|r| r.redis_update_ps),
        );
        println!(
            "  redis GEOSEARCH one at a time: {:.0} q/s, p50 {:.1} µs, p99 {:.1} µs; ours ÷ redis = {:.1}",
            rq,
            m(|r| r.redis_p50_us),
            m(|r| r.redis_p99_us),
            m(|r| r.nearest_qps) / rq
        );
        println!(
            "  redis GEOSEARCH pipelined {PIPELINE}: {:.0} q/s; ours ÷ redis = {:.1}",
            rp,
            m(|r| r.nearest_qps) / rp
        );
        let rg = m(|r| r.redis_grow_qps);
        println!(
            "  redis GEOSEARCH one at a time, radius grown client-side from {GROW_START_M} m: {:.0} q/s, p50 {:.1} µs, p99 {:.1} µs; ours ÷ redis = {:.1}",
            rg,
            m(|r| r.redis_grow_p50_us),
            m(|r| r.redis_grow_p99_us),
            m(|r| r.nearest_qps) / rg
        );
        println!(
            "  redis GEOADD pipelined {PIPELINE}: {:.0} /s; ours ÷ redis = {:.1}",
            ru,
            m(|r| r.update_ps) / ru
        );
        println!(
            "  redis memory: {:.0} B per officer (used_memory growth); same 5 officers as ours in {:.1} % of round-0 queries",
            redis_bytes,
            100.0 * rounds[0].agreement
        );
    } else {
        println!("  redis baseline: SKIPPED (redis-server not on PATH)");
    }
    Ok(())
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny smoke.
    let benching = std::env::args().any(|a| a == "--bench");
    let (officers, queries, seconds) = if benching {
        (100_000, 20_000, 2.0)
    } else {
        (2_000, 200, 0.2)
    };
    let cfg = match (|| -> Result<Config> {
        Ok(Config {
            officers: env_or("OFFICERS", officers)?.max(1),
            queries: env_or("QUERIES", queries)?.max(1),
            seconds: env_or("SECONDS", seconds)?,
        })
    })() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("proximity bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&cfg) {
        eprintln!("proximity bench failed: {e}");
        std::process::exit(1);
    }
}
