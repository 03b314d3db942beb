//! Protocol v1: the message model both subprotocols carry.
//!
//! A client sends [`ClientFrame`]s: a client-chosen request id and a [`Request`]. The server
//! answers every request with exactly one [`ServerFrame::Reply`] or [`ServerFrame::Error`]
//! carrying that id, and sends [`ServerFrame::Push`] for anything not asked for.
//!
//! Enum variant order is the binary encoding (a varint tag): append, never reorder or remove.
//! PROTOCOL.md documents every message, field and byte.

use crate::ErrorCode;
use crate::Role;
use serde::{Deserialize, Serialize};

mod patrol;
pub use patrol::*;

/// The protocol version this module implements.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client; echoed in the one reply or error. Ids need not be unique, but
    /// a client that reuses them cannot tell replies apart.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// Everything a client can ask. Roles allowed are listed in PROTOCOL.md and enforced in
/// [`crate::api`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with [`Reply::Pong`]. Any role.
    Ping,
    /// Replace this socket's token with a fresh one for the same subject and role. Any role.
    RefreshToken {
        /// The new token.
        token: String,
    },
    /// Create a race. Admin.
    RaceCreate(RaceCreate),
    /// Edit a scheduled race. Admin.
    RaceUpdate(RaceUpdate),
    /// List races. Admin, spectator, racer (race-scoped tokens see their race only).
    RaceList,
    /// One race. Admin, spectator, racer (race-scoped tokens: their race only).
    RaceGet {
        /// Race id.
        id: String,
    },
    /// Scheduled → live. Admin.
    RaceStart {
        /// Race id.
        id: String,
    },
    /// Live → finished. Admin.
    RaceFinish {
        /// Race id.
        id: String,
    },
    /// Scheduled or live → cancelled. Admin.
    RaceCancel {
        /// Race id.
        id: String,
        /// Why, for the record.
        reason: Option<String>,
    },
    /// A consistent backup of the whole database, streamed as [`Push::BackupChunk`]s and
    /// closed by [`Reply::BackupDone`]. Admin.
    Backup,
    /// Register racers to a race, all or none; answered with [`Reply::Registered`]. Admin.
    RacerRegister {
        /// Race id.
        race_id: String,
        /// The racers; bibs unique within the race.
        racers: Vec<RacerView>,
    },
    /// A race's registered racers by bib; answered with [`Reply::Racers`]. Admin, spectator,
    /// racer (scoped tokens: their race only); emails are shown to admins only.
    RacerList {
        /// Race id.
        race_id: String,
    },
    /// GPS fixes from a racer's device, oldest first; answered with [`Reply::FixesAck`].
    /// Racer tokens only: the race is the token's race, the bib its subject.
    Fixes {
        /// The fixes (a live stream sends one; a reconnecting phone sends its buffer).
        fixes: Vec<WireFix>,
    },
    /// The race's current standings; answered with [`Reply::Standings`]. Admin, spectator,
    /// racer (scoped tokens: their race only).
    RaceStandings {
        /// Race id.
        race_id: String,
    },
    /// Watch a race: answered with [`Reply::Subscribed`] (a consistent snapshot), then
    /// [`Push::RaceUpdate`]s every tick while anything changes. One subscription per socket;
    /// subscribing again replaces it. Admin, spectator, racer (scoped tokens: their race).
    RaceSubscribe {
        /// Race id.
        race_id: String,
        /// The last update sequence a reconnecting client saw. The snapshot in the reply
        /// always brings it up to date, so nothing is ever missed silently.
        since_seq: Option<u64>,
    },
    /// The results (final once the race is over); answered with [`Reply::Results`]. Admin,
    /// spectator, racer (scoped tokens: their race only).
    RaceResults {
        /// Race id.
        race_id: String,
    },
    /// Replay a started race from its stored fixes at `speed` times real time: answered with
    /// [`Reply::ReplayStarted`], then [`Push::ReplayTick`]s, then [`Push::ReplayDone`].
    /// Admin, spectator, racer (scoped tokens: their race only).
    RaceReplay {
        /// Race id.
        race_id: String,
        /// Race seconds per wall-clock second, 0.1..=10000.
        speed: f64,
        /// Race time to start from (ms since the epoch), clamped to the replay's span; none:
        /// its beginning. A client changing speed mid-replay asks again from where it is.
        from_ms: Option<i64>,
    },
    /// Mint a public, read-only spectator token for one race, for a share link; answered with
    /// [`Reply::Shared`]. Admin only.
    RaceShare {
        /// Race id (must exist).
        race_id: String,
        /// Lifetime in seconds, 1..=`auth.max_ttl_secs`.
        ttl_secs: u64,
    },
    /// Submit an envelope of mails; processed once per (correlation_id, sequence) within
    /// the retention. Answered with [`Reply::MailJobs`] (a duplicate gets the first
    /// envelope's jobs). Admin.
    MailSubmit(MailEnvelope),
    /// One mail job with its failed attempts; answered with [`Reply::MailJob`]. Admin.
    MailStatus {
        /// The job id (24 hex digits).
        id: String,
    },
    /// Mail jobs, oldest first, optionally in one state (`accepted`, `sending`, `sent`,
    /// `retry_waiting`, `dead`); answered with [`Reply::MailJobs`]. Admin.
    MailList {
        /// Only jobs in this state.
        state: Option<String>,
        /// Most rows, 1..=10000.
        limit: u32,
    },
    /// The failed-message log, newest first; answered with [`Reply::MailFailures`]. Admin.
    MailFailed {
        /// Most rows, 1..=10000.
        limit: u32,
    },
    /// Re-drive one dead job; answered with [`Reply::MailJobs`] (that job). Admin.
    MailRetry {
        /// The job id.
        id: String,
    },
    /// Re-drive every dead job; answered with [`Reply::MailJobs`] (those re-driven). Admin.
    MailRetryAllDead,
    /// The name officers see in connect requests, and where this user's mails (thank-yous,
    /// vouchers) go; answered with [`Reply::ProfileSaved`]. Citizen.
    PatrolProfile {
        /// 1..=120 characters.
        display_name: String,
        /// A mail address, or none to forget it.
        email: Option<String>,
    },
    /// Go on duty; answered with [`Reply::OnDuty`]. Starting again extends or shortens the
    /// window. Officer (with an imported account).
    DutyStart {
        /// Window length, 1..=`patrol.duty_max_minutes`; none: `patrol.duty_default_minutes`.
        minutes: Option<u32>,
    },
    /// Go off duty now; answered with [`Reply::OffDuty`]. Officer.
    DutyEnd,
    /// Where the device is now; answered with [`Reply::PositionAck`]. Officer, citizen.
    PatrolPosition {
        /// Latitude × 1e7.
        lat_e7: i32,
        /// Longitude × 1e7.
        lon_e7: i32,
        /// Reported accuracy, metres; worse than `patrol.max_accuracy_m` is refused.
        accuracy_m: Option<f32>,
    },
    /// The `count` on-duty officers nearest to this citizen's last position; answered with
    /// [`Reply::Officers`]. Citizen.
    OfficersNearest {
        /// 1..=`patrol.nearest_max_count`.
        count: u32,
    },
    /// Ask an on-duty officer within the nearby radius to connect; answered with
    /// [`Reply::ConnectPending`]. Citizen.
    ConnectRequest {
        /// The officer.
        officer_id: String,
    },
    /// Accept or decline a connect request; answered with [`Reply::ConnectAnswered`].
    /// Officer.
    ConnectAnswer {
        /// From [`Push::ConnectRequested`].
        request_id: String,
        /// True: accept (a connection if the two are within `patrol.in_person_m`).
        accept: bool,
    },
    /// This user's points; answered with [`Reply::Balance`]. Officer, citizen.
    RewardsBalance,
    /// This user's points history, newest first; answered with [`Reply::RewardsHistory`].
    /// Officer, citizen.
    RewardsHistory {
        /// Only entries with a smaller index (the last page's smallest); none: the newest.
        before: Option<u64>,
        /// Most entries, 1..=500.
        limit: u32,
    },
    /// Retailer offers points can buy; answered with [`Reply::Offers`]. Officer, citizen,
    /// admin.
    OffersList,
    /// Charities points can go to; answered with [`Reply::Charities`]. Officer, citizen,
    /// admin.
    CharitiesList,
    /// Spend points on an offer; answered with [`Reply::Redeemed`] carrying the voucher
    /// code. Idempotent by `request_id`. Officer, citizen.
    RewardsRedeem {
        /// Chosen by the client, `[A-Za-z0-9_.-]{1,64}`; sending it again returns the first
        /// outcome, the same id for something else is `conflict`.
        request_id: String,
        /// The offer.
        offer_id: String,
    },
    /// Give points to a charity; answered with [`Reply::Donated`]. Idempotent by
    /// `request_id`. Officer, citizen.
    RewardsDonate {
        /// As for redeem.
        request_id: String,
        /// The charity.
        charity_id: String,
        /// Points, at least 1.
        points: u64,
    },
    /// Send a direct message to a user this user has a connection with; answered with
    /// [`Reply::MessageSent`]. Idempotent by `request_id`. Officer, citizen.
    MessageSend {
        /// As for redeem.
        request_id: String,
        /// The recipient.
        to: String,
        /// 1..=`patrol.max_message_chars` characters.
        text: String,
    },
    /// The conversation with one user, newest first; answered with [`Reply::Messages`].
    /// Officer, citizen.
    MessageHistory {
        /// The other user.
        with: String,
        /// Only messages with a smaller seq; none: the newest.
        before_seq: Option<u64>,
        /// Most messages, 1..=500.
        limit: u32,
    },
    /// Import officers, offers or charities (a re-imported id replaces the row); all rows or
    /// none. Answered with [`Reply::Imported`]. Admin.
    PatrolImport(ImportBatch),
    /// Connections and points per UTC day and precinct; answered with
    /// [`Reply::PatrolReport`]. Admin.
    PatrolReport {
        /// First day, `YYYY-MM-DD`.
        from: String,
        /// Last day (inclusive), `YYYY-MM-DD`, at most 366 days after `from`.
        to: String,
    },
    /// The organiser disqualifies a racer (a confirmed cut, any other breach): the results
    /// list them `dsq` with the reason. Live or finished races; answered with
    /// [`Reply::Race`]. Admin.
    RaceDisqualify {
        /// Race id.
        race_id: String,
        /// The racer's bib (must be registered).
        bib: u32,
        /// Why, 1..=500 characters after trimming: published with the results.
        reason: String,
    },
    /// Withdraw a disqualification that was a mistake. Live or finished races; answered with
    /// [`Reply::Race`]. Admin.
    RaceReinstate {
        /// Race id.
        race_id: String,
        /// The racer's bib (must be registered).
        bib: u32,
    },
    /// Binds a tracking app's device id to a racer (replacing the bib's earlier one), for
    /// apps that report over HTTP with nothing but that id (Traccar Client, OsmAnd,
    /// OwnTracks). Answered with [`Reply::Devices`] holding the binding. Admin.
    RaceDeviceBind {
        /// Race id.
        race_id: String,
        /// The racer's bib (must be registered).
        bib: u32,
        /// The id the app sends (6..=64 printable ASCII characters, no spaces); absent: the
        /// server generates an unguessable one (16 characters).
        device_id: Option<String>,
    },
    /// Unbinds a racer's device id: it is refused from now on. Answered with
    /// [`Reply::Devices`], empty. Admin.
    RaceDeviceRevoke {
        /// Race id.
        race_id: String,
        /// The racer's bib.
        bib: u32,
    },
    /// The race's device ids, by bib; answered with [`Reply::Devices`]. Admin only: the ids
    /// are the apps' credentials.
    RaceDevices {
        /// Race id.
        race_id: String,
    },
    /// A personal link for racer `bib` of a race: a racer token for that race and bib, for
    /// the racer page (`/ride#token=…`) of their invitation. Answered with
    /// [`Reply::Shared`]. Admin.
    RacerLink {
        /// Race id.
        race_id: String,
        /// The racer's bib (must be registered).
        bib: u32,
        /// Lifetime in seconds, 1..=`auth.max_ttl_secs`.
        ttl_secs: u64,
    },
}

/// Fields of [`Request::MailSubmit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailEnvelope {
    /// The submitter's correlation id (`[A-Za-z0-9_.-]{1,64}`).
    pub correlation_id: String,
    /// The envelope's sequence number within the correlation.
    pub sequence: u64,
    /// When the submitter sent it (its clock, ms since the epoch); an older sent-at never
    /// overwrites a contact's newer address.
    pub sent_at_ms: i64,
    /// 1..=1000 mails.
    pub messages: Vec<MailMessageView>,
}

/// One mail of an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailMessageView {
    /// Recipient address.
    pub to: String,
    /// One line, at most 200 characters.
    pub subject: String,
    /// Plain text, at most 64 KiB.
    pub body: String,
    /// The contact whose address `to` is as of `sent_at_ms`, if any.
    pub contact: Option<String>,
}

/// A mail job as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailJobView {
    /// Job id (24 hex digits, derived from correlation, sequence and index).
    pub id: String,
    /// `accepted`, `sending`, `sent`, `retry_waiting` or `dead`.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// Failed attempts logged.
    pub failures: u32,
    /// `smtp` or `http`.
    pub transport: String,
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Envelope correlation id.
    pub correlation_id: String,
    /// Envelope sequence number.
    pub sequence: u64,
    /// Position in the envelope.
    pub index: u32,
    /// When the job was accepted.
    pub accepted_at_ms: i64,
    /// When the next attempt is due (retry_waiting only).
    pub next_attempt_at_ms: Option<i64>,
    /// When it was sent (sent only).
    pub sent_at_ms: Option<i64>,
    /// The latest failure.
    pub last_error: Option<String>,
}

/// A mail job with its Message-ID and failed attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailJobDetailView {
    /// The job.
    pub job: MailJobView,
    /// The Message-ID header every attempt carries.
    pub message_id: String,
    /// Failed attempts, oldest first.
    pub failures: Vec<MailFailureView>,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailFailureView {
    /// The job.
    pub id: String,
    /// Recipient.
    pub to: String,
    /// Attempt number.
    pub attempt: u32,
    /// When it failed.
    pub at_ms: i64,
    /// What the transport said.
    pub error: String,
}

/// How a racer's race ended (or stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatusView {
    /// Crossed the finish line.
    Finished,
    /// Still on the course (race live).
    Racing,
    /// Did not finish.
    Dnf,
    /// Did not start.
    Dns,
    /// Disqualified (the row's `reason` says why).
    Dsq,
}

/// One row of the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultView {
    /// Position, 1-based: finishers, then (live) racers on the course. `None` for DNF, DSQ
    /// and DNS, which results list without a position.
    pub rank: Option<u32>,
    /// Bib number.
    pub bib: u32,
    /// Name.
    pub name: String,
    /// Team.
    pub team: Option<String>,
    /// Time from the race's start time to the finish, ms (finishers only).
    pub time_ms: Option<i64>,
    /// Average speed over the course, km/h (finishers only).
    pub avg_speed_kmh: Option<f64>,
    /// Distance covered, decimetres.
    pub distance_dm: u32,
    /// How it ended.
    pub status: ResultStatusView,
    /// Time from the race's start time at each checkpoint passed, ms, in course order.
    pub splits_ms: Vec<i64>,
    /// Why the row has no position, in words (DNF, DSQ, DNS); `None` for ranked rows.
    pub reason: Option<String>,
    /// Spells off the course long enough to raise the flag, oldest first.
    pub off_course: Vec<OffCourseView>,
    /// Suspected course cuts, oldest first.
    pub cuts: Vec<CutView>,
}

/// A spell off the course, as the results list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffCourseView {
    /// The first fix off the course, ms since the epoch (device time).
    pub from_ms: i64,
    /// The first fix back on it; `None` if the racer never came back.
    pub to_ms: Option<i64>,
    /// The farthest the racer was from the course, metres.
    pub max_offset_m: u32,
}

/// A suspected course cut, as the results list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutView {
    /// The fix that showed it, ms since the epoch (device time).
    pub at_ms: i64,
    /// Where the skipped stretch starts (the last confirmed progress), decimetres.
    pub from_dm: u32,
    /// Where the racer was found, decimetres.
    pub to_dm: u32,
    /// Progress was held at `from_dm` (`tracking.cut_rule = "hold"`), not credited.
    pub held: bool,
}

/// Figures about a whole race.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceStatsView {
    /// Registered racers.
    pub entrants: u32,
    /// Racers with at least one accepted fix.
    pub starters: u32,
    /// Racers who crossed the finish line.
    pub finishers: u32,
    /// Started but did not finish.
    pub dnf: u32,
    /// Did not start.
    pub dns: u32,
    /// The winner's time, ms.
    pub winning_time_ms: Option<i64>,
    /// The median finisher's time, ms.
    pub median_time_ms: Option<i64>,
    /// Best average speed of a finisher, km/h.
    pub fastest_avg_speed_kmh: Option<f64>,
    /// Distance covered by all racers together, metres.
    pub total_distance_m: f64,
    /// Disqualified (appended last: the binary layout is positional).
    pub dsq: u32,
}

/// A timing point along the course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Its name.
    pub name: String,
    /// Latitude × 1e7 (on the course line).
    pub lat_e7: i32,
    /// Longitude × 1e7.
    pub lon_e7: i32,
    /// Distance from the start along the course, decimetres.
    pub distance_dm: u32,
    /// A finisher must have passed it; missing it disqualifies.
    pub mandatory: bool,
}

/// A course point, in 1e-7 degrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoursePoint {
    /// Latitude × 1e7.
    pub lat_e7: i32,
    /// Longitude × 1e7.
    pub lon_e7: i32,
}

/// Everything a new spectator needs to draw the race, consistent at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceSnapshot {
    /// The race.
    pub race: RaceView,
    /// The course in order (empty when `resumed`).
    pub course: Vec<CoursePoint>,
    /// Timing points along the course, in order (empty when `resumed`).
    pub checkpoints: Vec<CheckpointView>,
    /// The start list (no emails).
    pub racers: Vec<RacerView>,
    /// Standings now, leader first (empty when `resumed`).
    pub standings: Vec<StandingView>,
    /// Updates continue from this sequence number.
    pub seq: u64,
    /// Spectators watching, this one included.
    pub spectators: u32,
    /// True: the subscription asked with `since_seq` and the server still had every update
    /// after it, so this reply carries no course or standings and the missed updates follow
    /// as [`Push::RaceUpdate`]s, then the live ones. False: a full snapshot; drop local state.
    pub resumed: bool,
}

/// A tick of a watched race.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceTick {
    /// The race.
    pub race_id: String,
    /// One more than the previous update the race published.
    pub seq: u64,
    /// True: `standings` is the whole table (sent after a skipped sequence number).
    /// False: only the rows that changed; replace rows by bib.
    pub full: bool,
    /// Spectators watching.
    pub spectators: u32,
    /// Rows, leader first.
    pub standings: Vec<StandingView>,
}

/// The rows of a watched race that changed after `since_seq` up to `seq`, in one frame: what a
/// socket that fell a few ticks behind gets instead of the ticks it missed (or the whole
/// table). It applies only to a table at `since_seq`, which is the last update this socket
/// was sent, so a client never applies it across a gap it cannot see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceCatchUp {
    /// The race.
    pub race_id: String,
    /// The update this one continues from: the last `seq` this socket was sent.
    pub since_seq: u64,
    /// The race's latest update, which this one brings the table to.
    pub seq: u64,
    /// Spectators watching.
    pub spectators: u32,
    /// Every row that changed in any update after `since_seq`, as of `seq`, leader first;
    /// replace rows by bib.
    pub standings: Vec<StandingView>,
}

/// One GPS fix on the wire: fixed-point and integer units so it encodes in a few varints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WireFix {
    /// Device time, ms since the epoch.
    pub at_ms: i64,
    /// Latitude × 1e7.
    pub lat_e7: i32,
    /// Longitude × 1e7.
    pub lon_e7: i32,
    /// Horizontal accuracy in decimetres.
    pub accuracy_dm: u32,
    /// Speed in cm/s, if the device has one.
    pub speed_cmps: Option<u32>,
    /// Elevation in decimetres, if known.
    pub elevation_dm: Option<i32>,
}

/// One row of the standings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingView {
    /// Bib number.
    pub bib: u32,
    /// 1-based rank.
    pub rank: u32,
    /// Distance along the course, decimetres.
    pub progress_dm: u32,
    /// Time behind the leader at the same course point, ms (0 for the leader).
    pub gap_ms: Option<i64>,
    /// Finish time, ms since the epoch.
    pub finished_at_ms: Option<i64>,
    /// Off the course for too long.
    pub off_course: bool,
    /// Latitude × 1e7 at the last fix (0 with no fix yet).
    pub lat_e7: i32,
    /// Longitude × 1e7 at the last fix (0 with no fix yet).
    pub lon_e7: i32,
    /// Recent pace along the course, cm/s.
    pub speed_cmps: Option<u32>,
    /// Estimated time to the finish at that pace, ms.
    pub eta_ms: Option<i64>,
    /// Checkpoints passed so far.
    pub checkpoints_passed: u16,
    /// When the last checkpoint was passed, ms since the epoch.
    pub last_split_ms: Option<i64>,
    /// A suspected course cut is on the racer's record (section 7.14 of PROTOCOL.md).
    pub cut_suspected: bool,
}

impl Request {
    /// Every request type name, in variant (tag) order.
    pub const TYPES: [&'static str; 47] = [
        "ping",
        "refresh_token",
        "race_create",
        "race_update",
        "race_list",
        "race_get",
        "race_start",
        "race_finish",
        "race_cancel",
        "backup",
        "racer_register",
        "racer_list",
        "fixes",
        "race_standings",
        "race_subscribe",
        "race_results",
        "race_replay",
        "race_share",
        "mail_submit",
        "mail_status",
        "mail_list",
        "mail_failed",
        "mail_retry",
        "mail_retry_all_dead",
        "patrol_profile",
        "duty_start",
        "duty_end",
        "patrol_position",
        "officers_nearest",
        "connect_request",
        "connect_answer",
        "rewards_balance",
        "rewards_history",
        "offers_list",
        "charities_list",
        "rewards_redeem",
        "rewards_donate",
        "message_send",
        "message_history",
        "patrol_import",
        "patrol_report",
        "race_disqualify",
        "race_reinstate",
        "race_device_bind",
        "race_device_revoke",
        "race_devices",
        "racer_link",
    ];

    /// The snake_case type name, for metrics and logs.
    pub fn type_name(&self) -> &'static str {
        Self::TYPES[match self {
            Request::Ping => 0,
            Request::RefreshToken { .. } => 1,
            Request::RaceCreate(_) => 2,
            Request::RaceUpdate(_) => 3,
            Request::RaceList => 4,
            Request::RaceGet { .. } => 5,
            Request::RaceStart { .. } => 6,
            Request::RaceFinish { .. } => 7,
            Request::RaceCancel { .. } => 8,
            Request::Backup => 9,
            Request::RacerRegister { .. } => 10,
            Request::RacerList { .. } => 11,
            Request::Fixes { .. } => 12,
            Request::RaceStandings { .. } => 13,
            Request::RaceSubscribe { .. } => 14,
            Request::RaceResults { .. } => 15,
            Request::RaceReplay { .. } => 16,
            Request::RaceShare { .. } => 17,
            Request::MailSubmit(_) => 18,
            Request::MailStatus { .. } => 19,
            Request::MailList { .. } => 20,
            Request::MailFailed { .. } => 21,
            Request::MailRetry { .. } => 22,
            Request::MailRetryAllDead => 23,
            Request::PatrolProfile { .. } => 24,
            Request::DutyStart { .. } => 25,
            Request::DutyEnd => 26,
            Request::PatrolPosition { .. } => 27,
            Request::OfficersNearest { .. } => 28,
            Request::ConnectRequest { .. } => 29,
            Request::ConnectAnswer { .. } => 30,
            Request::RewardsBalance => 31,
            Request::RewardsHistory { .. } => 32,
            Request::OffersList => 33,
            Request::CharitiesList => 34,
            Request::RewardsRedeem { .. } => 35,
            Request::RewardsDonate { .. } => 36,
            Request::MessageSend { .. } => 37,
            Request::MessageHistory { .. } => 38,
            Request::PatrolImport(_) => 39,
            Request::PatrolReport { .. } => 40,
            Request::RaceDisqualify { .. } => 41,
            Request::RaceReinstate { .. } => 42,
            Request::RaceDeviceBind { .. } => 43,
            Request::RaceDeviceRevoke { .. } => 44,
            Request::RaceDevices { .. } => 45,
            Request::RacerLink { .. } => 46,
        }]
    }
}

/// Fields of [`Request::RaceCreate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceCreate {
    /// Display name, 1..=`race.max_name_chars` characters.
    pub name: String,
    /// The course as GPX 1.0/1.1 text: track points in order (or route points).
    pub course_gpx: String,
    /// Planned start, ms since the epoch.
    pub start_at_ms: i64,
    /// Cut-off, ms since the epoch, after the start.
    pub cutoff_at_ms: Option<i64>,
}

/// Fields of [`Request::RaceUpdate`]; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceUpdate {
    /// Race id.
    pub id: String,
    /// New name.
    pub name: Option<String>,
    /// New course as GPX text.
    pub course_gpx: Option<String>,
    /// New planned start.
    pub start_at_ms: Option<i64>,
    /// New cut-off.
    pub cutoff_at_ms: Option<i64>,
    /// Remove the cut-off (wins over `cutoff_at_ms`). May be omitted in JSON (false).
    #[serde(default)]
    pub clear_cutoff: bool,
}

/// Something the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerFrame {
    /// The successful answer to request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// The failed answer to request `id` (`None` when the frame was too broken to read an id).
    Error {
        /// The request's id, when it could be read.
        id: Option<u64>,
        /// Why.
        error: WireError,
    },
    /// Not an answer: something the server tells unasked.
    Push(Push),
}

impl ServerFrame {
    /// The snake_case type name, for metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerFrame::Reply { reply, .. } => reply.type_name(),
            ServerFrame::Error { .. } => "error",
            ServerFrame::Push(push) => push.type_name(),
        }
    }
}

/// A typed error: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// For programs.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The server's clock, ms since the epoch.
        server_time_ms: i64,
    },
    /// Answer to [`Request::RefreshToken`].
    TokenRefreshed {
        /// The new expiry, ms since the epoch.
        expires_at_ms: i64,
    },
    /// One race (create, update, get, start, finish, cancel).
    Race(RaceView),
    /// Several races (list).
    Races(Vec<RaceView>),
    /// End of a backup stream.
    BackupDone(BackupInfo),
    /// A race's racers (racer_list).
    Racers(Vec<RacerView>),
    /// Answer to racer_register.
    Registered {
        /// Racers registered to the race now, in all.
        racers: u32,
    },
    /// Answer to fixes, sent once the accepted fixes are durable.
    FixesAck {
        /// Fixes accepted and stored.
        accepted: u32,
        /// Fixes that changed nothing: stale (already seen), inaccurate, impossible speed,
        /// or after the finish.
        ignored: u32,
        /// The newest fix applied for this racer: the device may drop every fix up to it.
        last_at_ms: Option<i64>,
    },
    /// Answer to race_standings, leader first.
    Standings(Vec<StandingView>),
    /// Answer to race_subscribe.
    Subscribed(RaceSnapshot),
    /// Answer to race_results.
    Results {
        /// Finishers by time, then the rest by distance, then DNS.
        rows: Vec<ResultView>,
        /// The race as a whole.
        stats: RaceStatsView,
    },
    /// Answer to race_replay: the race time the replay covers.
    ReplayStarted {
        /// Time of the first stored fix (none: nothing to replay).
        from_ms: Option<i64>,
        /// Time of the last stored fix.
        to_ms: Option<i64>,
    },
    /// Answer to race_share: a spectator token scoped to the race.
    Shared {
        /// The race.
        race_id: String,
        /// The token (HS256 JWT, role spectator, this race only).
        token: String,
        /// Its expiry, ms since the epoch.
        expires_at_ms: i64,
    },
    /// Answer to mail_submit, mail_list, mail_retry and mail_retry_all_dead.
    MailJobs(Vec<MailJobView>),
    /// Answer to mail_status.
    MailJob(Box<MailJobDetailView>),
    /// Answer to mail_failed.
    MailFailures(Vec<MailFailureView>),
    /// Answer to patrol_profile.
    ProfileSaved,
    /// Answer to duty_start: on duty until then.
    OnDuty {
        /// When the window ends by itself, ms since the epoch.
        until_ms: i64,
    },
    /// Answer to duty_end.
    OffDuty,
    /// Answer to patrol_position.
    PositionAck {
        /// Whether the position moved the device to another H3 cell.
        cell_changed: bool,
        /// An officer's duty window end while on duty; none off duty (and for citizens).
        /// An officer app that believes it is on duty and reads none here (its window ran
        /// out, or the server restarted) sends duty_start again.
        duty_until_ms: Option<i64>,
    },
    /// Answer to officers_nearest: nearest first.
    Officers(Vec<OfficerNearbyView>),
    /// Answer to connect_request: the officer has been asked.
    ConnectPending {
        /// Names the request in the officer's answer and in later pushes.
        request_id: String,
        /// When it expires unanswered, ms since the epoch.
        expires_at_ms: i64,
    },
    /// Answer to connect_answer: the connection when accepted, none when declined.
    ConnectAnswered {
        /// The connection made.
        connection: Option<ConnectionView>,
    },
    /// Answer to rewards_balance.
    Balance {
        /// Points.
        points: u64,
    },
    /// Answer to rewards_history.
    RewardsHistory(Vec<RewardEntryView>),
    /// Answer to offers_list.
    Offers(Vec<OfferRow>),
    /// Answer to charities_list.
    Charities(Vec<CharityRow>),
    /// Answer to rewards_redeem.
    Redeemed {
        /// The voucher code; `peloton admin voucher verify CODE` checks it offline.
        voucher_code: String,
        /// Points spent.
        points: u64,
        /// Balance after.
        balance: u64,
    },
    /// Answer to rewards_donate.
    Donated {
        /// Points given.
        points: u64,
        /// Balance after.
        balance: u64,
    },
    /// Answer to message_send: the message as stored.
    MessageSent(DirectMessageView),
    /// Answer to message_history: newest first.
    Messages(Vec<DirectMessageView>),
    /// Answer to patrol_import.
    Imported {
        /// `officers`, `offers` or `charities`.
        kind: String,
        /// Rows written.
        rows: u64,
        /// Rows of that kind stored now.
        total: u64,
    },
    /// Answer to patrol_report: by day, then precinct.
    PatrolReport(Vec<ReportRowView>),
    /// Answer to race_device_bind (the binding), race_device_revoke (none) and race_devices
    /// (every binding, by bib).
    Devices {
        /// Race id.
        race_id: String,
        /// The bindings.
        devices: Vec<DeviceView>,
    },
}

/// A racer's tracking-app device id, as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The racer's bib.
    pub bib: u32,
    /// The id the app sends.
    pub device_id: String,
    /// When it was bound, ms since the epoch.
    pub bound_at_ms: i64,
}

impl Reply {
    /// The snake_case type name, for metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            Reply::Pong { .. } => "pong",
            Reply::TokenRefreshed { .. } => "token_refreshed",
            Reply::Race(_) => "race",
            Reply::Races(_) => "races",
            Reply::BackupDone(_) => "backup_done",
            Reply::Racers(_) => "racers",
            Reply::Registered { .. } => "registered",
            Reply::FixesAck { .. } => "fixes_ack",
            Reply::Standings(_) => "standings",
            Reply::Subscribed(_) => "subscribed",
            Reply::Results { .. } => "results",
            Reply::ReplayStarted { .. } => "replay_started",
            Reply::Shared { .. } => "shared",
            Reply::MailJobs(_) => "mail_jobs",
            Reply::MailJob(_) => "mail_job",
            Reply::MailFailures(_) => "mail_failures",
            Reply::ProfileSaved => "profile_saved",
            Reply::OnDuty { .. } => "on_duty",
            Reply::OffDuty => "off_duty",
            Reply::PositionAck { .. } => "position_ack",
            Reply::Officers(_) => "officers",
            Reply::ConnectPending { .. } => "connect_pending",
            Reply::ConnectAnswered { .. } => "connect_answered",
            Reply::Balance { .. } => "balance",
            Reply::RewardsHistory(_) => "rewards_history",
            Reply::Offers(_) => "offers",
            Reply::Charities(_) => "charities",
            Reply::Redeemed { .. } => "redeemed",
            Reply::Donated { .. } => "donated",
            Reply::MessageSent(_) => "message_sent",
            Reply::Messages(_) => "messages",
            Reply::Imported { .. } => "imported",
            Reply::PatrolReport(_) => "patrol_report",
            Reply::Devices { .. } => "devices",
        }
    }
}

/// Unrequested messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Push {
    /// First frame on every socket: who the server thinks you are.
    Welcome(Welcome),
    /// A piece of a backup, in order, before its [`Reply::BackupDone`].
    BackupChunk {
        /// The backup request's id.
        request_id: u64,
        /// Byte offset of `data` in the backup file.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A tick of the race this socket watches.
    RaceUpdate(RaceTick),
    /// A step of a replay: as a race update, with `seq` counting the replay's own steps and
    /// the first one full.
    ReplayTick(RaceTick),
    /// The replay of `race_id` has played every stored fix.
    ReplayDone {
        /// The race.
        race_id: String,
    },
    /// This officer's duty window ended (`expired` by itself, or `ended` on another socket).
    DutyEnded {
        /// `expired` or `ended`.
        reason: String,
        /// When, ms since the epoch.
        at_ms: i64,
    },
    /// An on-duty officer came within `patrol.nearby_radius_m` (or moved while within it).
    OfficerNearby(OfficerNearbyView),
    /// An officer told about earlier left the radius, went off duty or disconnected.
    OfficerGone {
        /// The officer.
        officer_id: String,
    },
    /// A citizen asks this officer to connect; answer with connect_answer.
    ConnectRequested {
        /// The request.
        request_id: String,
        /// Who asks.
        citizen_id: String,
        /// Their display name (their id when they set none).
        display_name: String,
        /// How far away they are, metres (rounded like nearby distances).
        distance_m: u32,
        /// When the request expires unanswered, ms since the epoch.
        expires_at_ms: i64,
    },
    /// A connect request ended without a connection.
    ConnectClosed {
        /// The request.
        request_id: String,
        /// `declined`, `expired` or `officer_left`.
        outcome: String,
    },
    /// A connection was made (both sides get one).
    ConnectionEstablished(ConnectionView),
    /// A direct message to this user, live or on reconnect (at least once: dedupe by
    /// `from`/`to` and `seq`).
    DirectMessage(DirectMessageView),
    /// The interval a racer's device should report at from now on: sent right after a
    /// `fixes_ack` whenever it changed (sharper near checkpoints, the finish and rivals,
    /// slower alone).
    Pace {
        /// Milliseconds between fixes.
        interval_ms: u32,
        /// Why: `checkpoint`, `finish`, `battle`, `cruise`, `alone` or `finished`.
        reason: String,
    },
    /// Several ticks of the race this socket watches in one frame, for a socket that fell
    /// behind: the rows changed since the last update it was sent.
    RaceCatchUp(RaceCatchUp),
}

impl Push {
    /// The snake_case type name, for metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            Push::Welcome(_) => "welcome",
            Push::BackupChunk { .. } => "backup_chunk",
            Push::RaceUpdate(_) => "race_update",
            Push::ReplayTick(_) => "replay_tick",
            Push::ReplayDone { .. } => "replay_done",
            Push::DutyEnded { .. } => "duty_ended",
            Push::OfficerNearby(_) => "officer_nearby",
            Push::OfficerGone { .. } => "officer_gone",
            Push::ConnectRequested { .. } => "connect_requested",
            Push::ConnectClosed { .. } => "connect_closed",
            Push::ConnectionEstablished(_) => "connection_established",
            Push::DirectMessage(_) => "direct_message",
            Push::Pace { .. } => "pace",
            Push::RaceCatchUp(_) => "race_catch_up",
        }
    }
}

/// Fields of [`Push::Welcome`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version spoken on this socket.
    pub protocol: u32,
    /// The server's version (Cargo package version).
    pub server_version: String,
    /// The token's role.
    pub role: Role,
    /// The token's subject.
    pub sub: String,
    /// The token's race scope.
    pub race: Option<String>,
    /// The token's expiry, ms since the epoch.
    pub expires_at_ms: i64,
}

/// Race lifecycle status on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaceStateView {
    /// Created, not started.
    Scheduled,
    /// Racing.
    Live,
    /// Over.
    Finished,
    /// Called off.
    Cancelled,
}

/// A race as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceView {
    /// Race id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Lifecycle status.
    pub state: RaceStateView,
    /// Planned start, ms.
    pub start_at_ms: i64,
    /// Cut-off, ms.
    pub cutoff_at_ms: Option<i64>,
    /// Created, ms.
    pub created_at_ms: i64,
    /// Went live, ms.
    pub started_at_ms: Option<i64>,
    /// Finished, ms.
    pub finished_at_ms: Option<i64>,
    /// Cancelled, ms.
    pub cancelled_at_ms: Option<i64>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Number of course points.
    pub course_points: u32,
    /// Geodesic course length, metres.
    pub course_length_m: f64,
}

/// A registered racer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RacerView {
    /// Bib number, 1..=999999, unique within the race.
    pub bib: u32,
    /// Display name.
    pub name: String,
    /// Team.
    pub team: Option<String>,
    /// Contact email (admins only; `None` for other roles).
    pub email: Option<String>,
}

/// Fields of [`Reply::BackupDone`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Total bytes streamed.
    pub bytes: u64,
    /// Key/value records in the backup.
    pub records: u64,
    /// CRC-32 of every byte of the file but its last four, which hold this same value.
    pub crc32: u32,
}
