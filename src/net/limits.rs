//! Admission of connections: whether one more WebSocket, or one more guest token, may be
//! had right now. Counters by token subject and by client address, kept together under one
//! lock so a check and its increment cannot be split by a racing upgrade.
//!
//! The rules are pure ([`decide_socket`], [`Window::take`]); [`Admission`] only stores the
//! counts, and a [`SocketGuard`] gives its slot back when the session that holds it ends,
//! however it ends. No tokio here: the caller passes the time.

use crate::auth::Role;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Length of the per-address rate window: limits are stated per minute.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked per rate (upgrades, guest tokens). Beyond this, stale windows are
/// pruned; if all are current (a very wide distributed flood), new addresses pass
/// untracked, since the server-wide socket limit still holds and refusing every new address
/// would lock out the legitimate visitors too.
const MAX_TRACKED_ADDRS: usize = 65_536;
/// How long a client is told to wait when the server is full: sockets close all the time,
/// so a short, fixed pause is enough and spreads retries.
pub const FULL_RETRY_AFTER_SECS: u64 = 5;

/// The configured limits, copied out of `[ws]` and `[web]` so this module does not depend
/// on the configuration's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Sockets every non-admin role shares (`ws.max_sockets`).
    pub max_sockets: usize,
    /// Further sockets only admins may take once the server is full
    /// (`ws.admin_reserve_sockets`), so an operator can always get in to act.
    pub admin_reserve_sockets: usize,
    /// Sockets one identity may hold at once (`ws.max_sockets_per_subject`).
    pub max_sockets_per_subject: usize,
    /// Upgrade attempts one client address may make per minute
    /// (`ws.max_upgrades_per_addr_per_min`).
    pub upgrades_per_addr_per_min: u32,
    /// Guest tokens one client address may get per minute
    /// (`web.guest_tokens_per_addr_per_min`).
    pub guest_tokens_per_addr_per_min: u32,
    /// Unknown device ids one client address may present per minute
    /// (`web.device_misses_per_addr_per_min`): past it, every device request from the
    /// address waits out the minute, so ids cannot be guessed at line rate.
    pub device_misses_per_addr_per_min: u32,
    /// Whether loopback clients skip the per-address limits (`ws.addr_limits_exempt_loopback`):
    /// behind a reverse proxy on the same host every visitor is 127.0.0.1, and the load
    /// generator runs there too.
    pub exempt_loopback: bool,
}

/// How a socket counts against the limits, from its token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketClass {
    /// An operator: not limited per subject, and may use the admin reserve.
    Admin,
    /// A spectator token, which is shared by design (guest tokens all say `guest`, a share
    /// link is opened by everyone it is sent to): no per-subject limit, only the server-wide
    /// one and the per-address upgrade rate.
    Shared,
    /// A token naming one party (racer, officer, citizen): at most
    /// `max_sockets_per_subject` sockets.
    Identity,
}

impl SocketClass {
    /// The class of a socket opened with a token of `role`.
    pub fn of(role: Role) -> SocketClass {
        match role {
            Role::Admin => SocketClass::Admin,
            Role::Spectator => SocketClass::Shared,
            Role::Racer | Role::Officer | Role::Citizen => SocketClass::Identity,
        }
    }
}

/// Why a connection or a guest token was refused. Each is answered before any upgrade, so
/// a refused client never holds a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every socket ordinary clients may use is taken (503).
    ServerFull,
    /// This subject already holds its sockets (429).
    SubjectFull,
    /// Too many upgrade attempts from this address this minute (429).
    UpgradeRate {
        /// Seconds until the address's window renews.
        retry_after_secs: u64,
    },
    /// Too many guest tokens for this address this minute (429).
    GuestTokenRate {
        /// Seconds until the address's window renews.
        retry_after_secs: u64,
    },
    /// Too many unknown device ids from this address this minute (429).
    DeviceGuessRate {
        /// Seconds until the address's window renews.
        retry_after_secs: u64,
    },
}

impl Refusal {
    /// The `reason` label of the refusal metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server_full",
            Refusal::SubjectFull => "subject_full",
            Refusal::UpgradeRate { .. } => "upgrade_rate",
            Refusal::GuestTokenRate { .. } => "guest_token_rate",
            Refusal::DeviceGuessRate { .. } => "device_guess_rate",
        }
    }

    /// The `Retry-After` a client is given, seconds.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Refusal::ServerFull | Refusal::SubjectFull => FULL_RETRY_AFTER_SECS,
            Refusal::UpgradeRate { retry_after_secs }
            | Refusal::GuestTokenRate { retry_after_secs }
            | Refusal::DeviceGuessRate { retry_after_secs } => retry_after_secs,
        }
    }

    /// Whether this is the server being full (503) rather than this client asking too much
    /// (429).
    pub fn is_server_full(self) -> bool {
        self == Refusal::ServerFull
    }

    /// What the client is told, for people.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::ServerFull => "the server has no free sockets; retry shortly",
            Refusal::SubjectFull => {
                "this token's subject already has the most sockets allowed; close one first"
            }
            Refusal::UpgradeRate { .. } => {
                "too many connection attempts from this address; retry after the time given"
            }
            Refusal::GuestTokenRate { .. } => {
                "too many guest tokens for this address; retry after the time given"
            }
            Refusal::DeviceGuessRate { .. } => {
                "too many unknown device ids from this address; retry after the time given"
            }
        }
    }
}

/// The sockets open now, as the limits count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Occupancy {
    /// Every admitted socket, admins included: bounded by `max_sockets` plus the reserve.
    pub total: usize,
    /// Sockets of every role but admin: bounded by `max_sockets`, so admins never take an
    /// ordinary client's place while they stay within their reserve.
    pub non_admin: usize,
    /// Sockets held by the subject asking (counted for identities only).
    pub for_subject: usize,
}

/// Whether one more socket of `class` may open given what is open now. Admins may use
/// `max_sockets + admin_reserve_sockets` in all; everyone else `max_sockets`, within that
/// same total, and identities `max_sockets_per_subject` each.
pub fn decide_socket(
    limits: &AdmissionLimits,
    class: SocketClass,
    open: Occupancy,
) -> Result<(), Refusal> {
    let ceiling = limits
        .max_sockets
        .saturating_add(limits.admin_reserve_sockets);
    match class {
        SocketClass::Admin => {
            if open.total < ceiling {
                Ok(())
            } else {
                Err(Refusal::ServerFull)
            }
        }
        SocketClass::Shared | SocketClass::Identity => {
            if open.non_admin >= limits.max_sockets || open.total >= ceiling {
                Err(Refusal::ServerFull)
            } else if class == SocketClass::Identity
                && open.for_subject >= limits.max_sockets_per_subject
            {
                Err(Refusal::SubjectFull)
            } else {
                Ok(())
            }
        }
    }
}

/// A fixed one-minute window of one address's allowance. Fixed rather than sliding: one
/// start time and one count per address, so a flood of addresses costs little memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When this window began.
    start: Instant,
    /// What was taken in it.
    count: u32,
}

impl Window {
    /// An empty window beginning at `now`.
    pub fn new(now: Instant) -> Window {
        Window {
            start: now,
            count: 0,
        }
    }

    /// Takes one of `per_min`, or says in how many seconds (1..=60) the window renews.
    pub fn take(&mut self, now: Instant, per_min: u32) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= WINDOW {
            *self = Window::new(now);
        }
        if self.count < per_min {
            self.count += 1;
            return Ok(());
        }
        let left = WINDOW.saturating_sub(now.saturating_duration_since(self.start));
        // Round up so a client that waits exactly this long finds the window renewed.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Err(secs.clamp(1, WINDOW.as_secs()))
    }

    /// Seconds until the window renews when `per_min` are already taken, else `None`.
    pub fn exhausted(&self, now: Instant, per_min: u32) -> Option<u64> {
        if self.is_stale(now) || self.count < per_min {
            return None;
        }
        let left = WINDOW.saturating_sub(now.saturating_duration_since(self.start));
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).clamp(1, WINDOW.as_secs()))
    }

    /// Whether this window is over at `now`, so its entry can be forgotten.
    fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= WINDOW
    }
}

/// Descriptors a server needs besides its sockets: the database, the journal, stdio, the
/// listener, the spare, and HTTP requests such as `/healthz` arriving while it is full.
pub const DESCRIPTORS_BESIDES_SOCKETS: u64 = 64;

/// The soft open-file limit from the text of `/proc/self/limits` (Linux), `None` when it
/// says `unlimited` or cannot be read. Read this way because the crate does not link libc.
pub fn soft_open_file_limit(proc_limits: &str) -> Option<u64> {
    proc_limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// `limits` with `max_sockets` lowered, if need be, so sockets and the admin reserve leave
/// [`DESCRIPTORS_BESIDES_SOCKETS`] of an open-file limit of `soft_limit` free: otherwise a
/// full server would have no descriptor for `/healthz` or an admin. At least one socket.
pub fn fit_to_descriptors(limits: AdmissionLimits, soft_limit: u64) -> AdmissionLimits {
    let room = soft_limit
        .saturating_sub(DESCRIPTORS_BESIDES_SOCKETS)
        .saturating_sub(limits.admin_reserve_sockets as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    AdmissionLimits {
        max_sockets: limits.max_sockets.min(room),
        ..limits
    }
}

/// The key an address is limited under: an IPv6 client controls a whole /64, so it counts
/// as one; an IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Per-address windows for one kind of request.
#[derive(Debug, Default)]
struct AddrWindows {
    /// The window of each address key.
    windows: HashMap<IpAddr, Window>,
    /// When stale windows were last pruned, so a full map is not scanned on every request.
    last_prune: Option<Instant>,
}

impl AddrWindows {
    /// Takes one of `per_min` for `ip`.
    fn take(&mut self, ip: IpAddr, now: Instant, per_min: u32) -> Result<(), u64> {
        let key = addr_key(ip);
        if let Some(window) = self.windows.get_mut(&key) {
            return window.take(now, per_min);
        }
        if self.windows.len() >= MAX_TRACKED_ADDRS {
            let due = self
                .last_prune
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                self.windows.retain(|_, w| !w.is_stale(now));
                self.last_prune = Some(now);
            }
            if self.windows.len() >= MAX_TRACKED_ADDRS {
                return Ok(());
            }
        }
        let mut window = Window::new(now);
        let taken = window.take(now, per_min);
        self.windows.insert(key, window);
        taken
    }

    /// Whether `ip` used up its `per_min` (seconds until it renews), without taking.
    fn exhausted(&self, ip: IpAddr, now: Instant, per_min: u32) -> Option<u64> {
        self.windows
            .get(&addr_key(ip))
            .and_then(|w| w.exhausted(now, per_min))
    }
}

/// The identity a per-subject limit counts: role, race scope and subject together, since a
/// racer's subject is a bib and bib 7 of one race is not bib 7 of another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectKey {
    /// The token's role.
    role: Role,
    /// The token's race scope.
    race: Option<String>,
    /// The token's subject.
    sub: String,
}

impl SubjectKey {
    /// The key of a token's identity.
    pub fn new(role: Role, race: Option<&str>, sub: &str) -> SubjectKey {
        SubjectKey {
            role,
            race: race.map(str::to_owned),
            sub: sub.to_owned(),
        }
    }
}

/// What is counted now.
#[derive(Debug, Default)]
struct Counts {
    /// Sockets admitted and not yet released.
    total: usize,
    /// Of those, the ones not opened by admins.
    non_admin: usize,
    /// Sockets per identity, for [`SocketClass::Identity`] only; no zero entries.
    per_subject: HashMap<SubjectKey, usize>,
    /// Upgrade attempts per address.
    upgrades: AddrWindows,
    /// Guest tokens per address.
    guest_tokens: AddrWindows,
    /// Unknown device ids per address.
    device_misses: AddrWindows,
}

/// The server's admission state: one per listening server.
#[derive(Debug)]
pub struct Admission {
    /// The limits it applies.
    limits: AdmissionLimits,
    /// The counts, under one lock so check-and-increment is atomic. Held for a few map
    /// operations only, never across an await.
    counts: Mutex<Counts>,
}

impl Admission {
    /// Empty counts under `limits`.
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// The limits applied.
    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // A panic while holding the lock leaves consistent counts (every update is a single
        // assignment), so a poisoned lock is still usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one socket of `class` for `subject`, or refuses it. The slot is held until the
    /// returned guard drops.
    pub fn admit_socket(
        self: &Arc<Self>,
        class: SocketClass,
        subject: SubjectKey,
    ) -> Result<SocketGuard, Refusal> {
        let mut counts = self.counts();
        let for_subject = match class {
            SocketClass::Identity => counts.per_subject.get(&subject).copied().unwrap_or(0),
            SocketClass::Admin | SocketClass::Shared => 0,
        };
        let open = Occupancy {
            total: counts.total,
            non_admin: counts.non_admin,
            for_subject,
        };
        decide_socket(&self.limits, class, open)?;
        counts.total += 1;
        let admin = class == SocketClass::Admin;
        if !admin {
            counts.non_admin += 1;
        }
        let subject = match class {
            SocketClass::Identity => {
                *counts.per_subject.entry(subject.clone()).or_insert(0) += 1;
                Some(subject)
            }
            SocketClass::Admin | SocketClass::Shared => None,
        };
        Ok(SocketGuard {
            admission: self.clone(),
            admin,
            subject,
        })
    }

    /// Counts one upgrade attempt from `ip` at `now`.
    pub fn take_upgrade(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.exempt(ip) {
            return Ok(());
        }
        let per_min = self.limits.upgrades_per_addr_per_min;
        self.counts()
            .upgrades
            .take(ip, now, per_min)
            .map_err(|retry_after_secs| Refusal::UpgradeRate { retry_after_secs })
    }

    /// Counts one guest token for `ip` at `now`.
    pub fn take_guest_token(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.exempt(ip) {
            return Ok(());
        }
        let per_min = self.limits.guest_tokens_per_addr_per_min;
        self.counts()
            .guest_tokens
            .take(ip, now, per_min)
            .map_err(|retry_after_secs| Refusal::GuestTokenRate { retry_after_secs })
    }

    /// Whether `ip` may present a device id now: not once it presented too many unknown
    /// ones this minute. Known ids from that address wait too, or a guesser would learn
    /// which guess was right from the answer.
    pub fn admit_device(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.exempt(ip) {
            return Ok(());
        }
        let per_min = self.limits.device_misses_per_addr_per_min;
        match self.counts().device_misses.exhausted(ip, now, per_min) {
            Some(retry_after_secs) => Err(Refusal::DeviceGuessRate { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Counts one unknown device id from `ip`.
    pub fn device_miss(&self, ip: IpAddr, now: Instant) {
        if self.exempt(ip) {
            return;
        }
        let per_min = self.limits.device_misses_per_addr_per_min;
        // Refused or not, the miss is counted by the window; admit_device reads it.
        let _ = self.counts().device_misses.take(ip, now, per_min);
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.limits.exempt_loopback && ip.to_canonical().is_loopback()
    }

    /// Sockets admitted now.
    pub fn open_sockets(&self) -> usize {
        self.counts().total
    }

    /// Sockets `subject` holds now (identity sockets only).
    pub fn open_for(&self, subject: &SubjectKey) -> usize {
        self.counts().per_subject.get(subject).copied().unwrap_or(0)
    }

    fn release(&self, admin: bool, subject: Option<&SubjectKey>) {
        let mut counts = self.counts();
        counts.total = counts.total.saturating_sub(1);
        if !admin {
            counts.non_admin = counts.non_admin.saturating_sub(1);
        }
        if let Some(subject) = subject {
            if let Some(n) = counts.per_subject.get_mut(subject) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.per_subject.remove(subject);
                }
            }
        }
    }
}

/// One admitted socket's slot, given back on drop: the session task owns it, so a socket
/// that ends in any way (close, error, panic, shutdown) frees its place.
#[derive(Debug)]
pub struct SocketGuard {
    /// Where the slot was taken.
    admission: Arc<Admission>,
    /// Whether an admin holds it (not counted among ordinary sockets).
    admin: bool,
    /// The identity counted, when the class is counted per subject.
    subject: Option<SubjectKey>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.admission.release(self.admin, self.subject.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limits(max: usize, reserve: usize, per_subject: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_sockets: max,
            admin_reserve_sockets: reserve,
            max_sockets_per_subject: per_subject,
            upgrades_per_addr_per_min: 3,
            guest_tokens_per_addr_per_min: 2,
            device_misses_per_addr_per_min: 3,
            exempt_loopback: false,
        }
    }

    fn key(sub: &str) -> SubjectKey {
        SubjectKey::new(Role::Racer, Some("r1"), sub)
    }

    #[test]
    fn a_full_server_refuses_all_but_admins_within_their_reserve() {
        let l = limits(2, 1, 10);
        let open = |total, non_admin| Occupancy {
            total,
            non_admin,
            for_subject: 0,
        };
        assert_eq!(decide_socket(&l, SocketClass::Shared, open(1, 1)), Ok(()));
        assert_eq!(
            decide_socket(&l, SocketClass::Shared, open(2, 2)),
            Err(Refusal::ServerFull)
        );
        assert_eq!(
            decide_socket(&l, SocketClass::Identity, open(2, 2)),
            Err(Refusal::ServerFull)
        );
        assert_eq!(decide_socket(&l, SocketClass::Admin, open(2, 2)), Ok(()));
        assert_eq!(
            decide_socket(&l, SocketClass::Admin, open(3, 2)),
            Err(Refusal::ServerFull)
        );
        // An admin within the reserve does not take an ordinary client's place...
        assert_eq!(decide_socket(&l, SocketClass::Shared, open(2, 1)), Ok(()));
        // ...but admins beyond it do, since the total is bounded too.
        assert_eq!(
            decide_socket(&l, SocketClass::Shared, open(3, 1)),
            Err(Refusal::ServerFull)
        );
    }

    #[test]
    fn only_identities_are_limited_per_subject() {
        let l = limits(100, 1, 3);
        let open = Occupancy {
            total: 10,
            non_admin: 10,
            for_subject: 3,
        };
        assert_eq!(
            decide_socket(&l, SocketClass::Identity, open),
            Err(Refusal::SubjectFull)
        );
        assert_eq!(decide_socket(&l, SocketClass::Shared, open), Ok(()));
        assert_eq!(decide_socket(&l, SocketClass::Admin, open), Ok(()));
        assert_eq!(SocketClass::of(Role::Spectator), SocketClass::Shared);
        assert_eq!(SocketClass::of(Role::Officer), SocketClass::Identity);
        assert_eq!(SocketClass::of(Role::Admin), SocketClass::Admin);
    }

    #[test]
    fn guards_give_their_slots_back() {
        let a = Admission::new(limits(10, 0, 2));
        let g1 = a.admit_socket(SocketClass::Identity, key("7")).unwrap();
        let _g2 = a.admit_socket(SocketClass::Identity, key("7")).unwrap();
        assert_eq!(
            a.admit_socket(SocketClass::Identity, key("7")).unwrap_err(),
            Refusal::SubjectFull
        );
        // The same bib in another race is another person.
        let other = SubjectKey::new(Role::Racer, Some("r2"), "7");
        let _g3 = a.admit_socket(SocketClass::Identity, other).unwrap();
        drop(g1);
        assert_eq!(a.open_for(&key("7")), 1);
        let _g4 = a.admit_socket(SocketClass::Identity, key("7")).unwrap();
        assert_eq!(a.open_sockets(), 3);
    }

    #[test]
    fn a_window_refuses_until_it_renews() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        for _ in 0..3 {
            assert_eq!(w.take(t0, 3), Ok(()));
        }
        assert_eq!(w.take(t0 + Duration::from_millis(500), 3), Err(60));
        assert_eq!(w.take(t0 + Duration::from_secs(59), 3), Err(1));
        assert_eq!(w.take(t0 + WINDOW, 3), Ok(()));
    }

    #[test]
    fn addresses_are_limited_separately_and_loopback_may_be_exempt() {
        let now = Instant::now();
        let a = Admission::new(limits(10, 0, 2));
        let one = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let two = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!(a.take_guest_token(one, now).is_ok());
        assert!(a.take_guest_token(one, now).is_ok());
        assert!(matches!(
            a.take_guest_token(one, now),
            Err(Refusal::GuestTokenRate { .. })
        ));
        assert!(a.take_guest_token(two, now).is_ok());
        // Upgrades have their own allowance.
        assert!(a.take_upgrade(one, now).is_ok());
        let exempt = Admission::new(AdmissionLimits {
            exempt_loopback: true,
            ..limits(10, 0, 2)
        });
        for _ in 0..10 {
            assert!(exempt
                .take_guest_token(IpAddr::V4(Ipv4Addr::LOCALHOST), now)
                .is_ok());
        }
    }

    #[test]
    fn the_open_file_limit_is_read_and_compared() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max cpu time              unlimited            unlimited            seconds\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(soft_open_file_limit(text), Some(1024));
        assert_eq!(
            soft_open_file_limit("Max open files  unlimited  unlimited  files\n"),
            None
        );
        assert_eq!(soft_open_file_limit(""), None);
        let l = limits(20_000, 16, 16);
        assert_eq!(fit_to_descriptors(l, 1024).max_sockets, 1024 - 64 - 16);
        assert_eq!(fit_to_descriptors(l, 65_536), l);
        assert_eq!(fit_to_descriptors(l, 10).max_sockets, 1);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(addr_key(a), addr_key(b));
        assert_ne!(addr_key(a), addr_key(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(addr_key(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let exempt = Admission::new(AdmissionLimits {
            exempt_loopback: true,
            ..limits(1, 0, 1)
        });
        let now = Instant::now();
        for ip in [
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ] {
            for _ in 0..5 {
                assert!(exempt.take_upgrade(ip, now).is_ok());
            }
        }
    }

    /// One step of a random admission history.
    #[derive(Debug, Clone)]
    enum Step {
        /// Open a socket of the class (0 admin, 1 shared, 2 identity) for subject n.
        Open(u8, u8),
        /// Close the k-th held socket (modulo how many are held).
        Close(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..3, 0u8..4).prop_map(|(c, s)| Step::Open(c, s)),
            any::<usize>().prop_map(Step::Close),
        ]
    }

    proptest! {
        /// Whatever the order of opens and closes, no limit is ever exceeded, every refusal
        /// was justified, and closing everything leaves nothing counted.
        #[test]
        fn limits_hold_and_slots_return(
            max in 0usize..8,
            reserve in 0usize..4,
            per_subject in 1usize..4,
            steps in prop::collection::vec(step(), 0..200),
        ) {
            let admission = Admission::new(limits(max, reserve, per_subject));
            let mut held: Vec<(SocketClass, u8, SocketGuard)> = Vec::new();
            for s in steps {
                match s {
                    Step::Open(c, sub) => {
                        let class = [SocketClass::Admin, SocketClass::Shared, SocketClass::Identity][c as usize];
                        let before = held.len();
                        let before_non_admin = held.iter().filter(|(k, _, _)| *k != SocketClass::Admin).count();
                        let same = held.iter().filter(|(k, s, _)| *k == SocketClass::Identity && *s == sub).count();
                        match admission.admit_socket(class, key(&sub.to_string())) {
                            Ok(g) => held.push((class, sub, g)),
                            Err(Refusal::ServerFull) => {
                                if class == SocketClass::Admin {
                                    prop_assert!(before >= max + reserve);
                                } else {
                                    prop_assert!(before_non_admin >= max || before >= max + reserve);
                                }
                            }
                            Err(Refusal::SubjectFull) => {
                                prop_assert_eq!(class, SocketClass::Identity);
                                prop_assert!(same >= per_subject);
                            }
                            Err(other) => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    Step::Close(k) => {
                        if !held.is_empty() {
                            let k = k % held.len();
                            held.swap_remove(k);
                        }
                    }
                }
                prop_assert_eq!(admission.open_sockets(), held.len());
                prop_assert!(held.len() <= max + reserve);
                let non_admin = held.iter().filter(|(k, _, _)| *k != SocketClass::Admin).count();
                // Non-admins are admitted only below `max`, so they never exceed it.
                prop_assert!(non_admin <= max);
                for sub in 0u8..4 {
                    let n = held.iter().filter(|(k, s, _)| *k == SocketClass::Identity && *s == sub).count();
                    prop_assert!(n <= per_subject);
                    prop_assert_eq!(admission.open_for(&key(&sub.to_string())), n);
                }
            }
            held.clear();
            prop_assert_eq!(admission.open_sockets(), 0);
            prop_assert!(admission.counts().per_subject.is_empty());
        }

        /// A window never gives more than `per_min` within one minute, and a refusal's wait
        /// is 1..=60 seconds and really ends the refusal.
        #[test]
        fn a_window_gives_at_most_its_allowance(
            per_min in 1u32..20,
            offsets in prop::collection::vec(0u64..180_000, 1..100),
        ) {
            let t0 = Instant::now();
            let mut offsets = offsets;
            offsets.sort_unstable();
            let mut w = Window::new(t0);
            let mut taken: Vec<u64> = Vec::new();
            for ms in offsets {
                let now = t0 + Duration::from_millis(ms);
                match w.take(now, per_min) {
                    Ok(()) => taken.push(ms),
                    Err(secs) => {
                        prop_assert!((1..=60).contains(&secs));
                        let mut later = w;
                        prop_assert_eq!(later.take(now + Duration::from_secs(secs), per_min), Ok(()));
                    }
                }
            }
            // A window starts at the first request after the previous one ended (that
            // request is always granted), so replaying the grants with that rule must
            // never find more than `per_min` in one window.
            let mut granted_in_window = 0u32;
            let mut window_start = 0u64;
            for &ms in &taken {
                if ms - window_start >= 60_000 {
                    window_start = ms;
                    granted_in_window = 0;
                }
                granted_in_window += 1;
                prop_assert!(granted_in_window <= per_min);
            }
        }
    }
}
