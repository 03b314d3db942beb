//! Golden wire samples: the exact bytes of protocol v1, fixed in `tests/golden/wire_v1.txt`.
//!
//! # Why
//!
//! The bytes of `peloton.v1.bin` and `peloton.v1.json` are the contract with everything
//! already deployed: racers' phones that cannot all be updated before a race, officer and
//! citizen apps, and the spectator page (`web/`), which decodes JSON frames by name. The
//! binary encoding is positional (bincode: variant order is the tag, field order is the
//! layout, no field names), so moving a type, reordering a variant or a field, renaming a
//! serde attribute or bumping bincode can silently change the wire while every round-trip
//! test still passes. These tests compare today's encodings with a fixture written from the
//! code as it was when the fixture was blessed, byte for byte, so a restructuring (such as
//! moving the protocol into its own crate) proves it did not change the wire.
//!
//! What is fixed:
//! - at least one sample of every `Request` (as a client frame with an id), `Reply`, `Push`
//!   and `ServerFrame` variant, and of every `ErrorCode`, `Role`, `RaceStateView`,
//!   `ResultStatusView` and `ImportBatch` variant, each in both encodings, produced by the
//!   codec functions the server and the client use (`Codec::encode_client_bytes`,
//!   `Codec::encode_server_bytes`) and decoded back with `Codec::decode_client` /
//!   `Codec::decode_server` (the fixture's bytes must decode to the sample and re-encode to
//!   the same bytes);
//! - the WebSocket close codes of `net::close_code` (name and number), the subprotocol names
//!   and `PROTOCOL_VERSION`;
//! - the worked binary examples of PROTOCOL.md §5.7 (`doc.*` samples, also checked against
//!   the hex that section spells out) and the JSON request examples of §6.3, including the
//!   forms with omitted optional fields that clients may send and the encoder never writes.
//!
//! Coverage is enforced by the compiler: the `variants!` and `unit_variants!` tables below are
//! exhaustive `match`es (no `_` arm), so a new variant does not compile until it is named
//! there, and once named, `every_variant_has_a_golden_sample` fails until it has a sample.
//!
//! # After a deliberate protocol change
//!
//! A change that alters these bytes is a protocol change, not a refactoring: within v1,
//! variants are only appended and existing layouts never change (PROTOCOL.md §1.3), so a
//! changed line for an existing sample normally means a new protocol version (new
//! subprotocol names, `peloton.v2.*`, served beside v1). Either way PROTOCOL.md must say what
//! changed (its tag tables and byte layouts, §4 and §5). Then add samples for new variants
//! and rewrite the fixture:
//!
//! ```text
//! PELOTON_BLESS_GOLDEN=1 cargo test --test wire_golden
//! cargo test --test wire_golden
//! ```
//!
//! and review `git diff tests/golden/wire_v1.txt`: only the lines you meant to add or change
//! may differ. Never bless to make a refactoring pass.
//!
//! Fixture format: `#` lines are comments; every other line is
//! `<sample> <encoding> <payload>`, where the encoding is `bin` (payload: lowercase hex of the
//! binary frame), `json` (payload: the exact JSON text, always one line), or `u16`, `u32`,
//! `name` for the constants.

use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::net::close_code;
use peloton::net::codec::{Codec, BINARY_SUBPROTOCOL, JSON_SUBPROTOCOL};
use peloton::net::protocol::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

/// Set to `1` to rewrite the fixture from today's code instead of comparing with it.
const BLESS_ENV: &str = "PELOTON_BLESS_GOLDEN";

/// The fixture, relative to the package root.
const FIXTURE: &str = "tests/golden/wire_v1.txt";

/// Comment lines at the top of the fixture, so a reader of a diff knows what it is.
const FIXTURE_HEADER: &str = "\
# Golden wire samples of Peloton protocol v1 (peloton.v1.bin / peloton.v1.json).
# Written by tests/wire_golden.rs with PELOTON_BLESS_GOLDEN=1; do not edit by hand.
# A changed line is a wire change: see the module doc of tests/wire_golden.rs and PROTOCOL.md.
# Format: <sample> <encoding> <payload>; bin = lowercase hex, json = exact text.
";

/// Defines an exhaustive variant-name function over an enum with fields, and the list of
/// every name it returns. The `match` has no `_` arm, so adding a variant to the enum breaks
/// the build until it is named here, and naming it puts it in the list the coverage test
/// checks against the samples.
macro_rules! variants {
    ($name_fn:ident, $all:ident, $ty:ty { $($pat:pat => $name:literal,)+ }) => {
        /// The variant's snake_case name (exhaustive: see `variants!`).
        fn $name_fn(value: &$ty) -> &'static str {
            match value {
                $($pat => $name,)+
            }
        }
        /// Every variant name, in declaration (tag) order.
        const $all: &[&str] = &[$($name,)+];
    };
}

/// As `variants!`, for enums without fields, also listing every value so samples can be
/// generated for each one.
macro_rules! unit_variants {
    ($name_fn:ident, $all:ident, $ty:ident { $($variant:ident => $name:literal,)+ }) => {
        /// The variant's snake_case name (exhaustive: see `unit_variants!`).
        fn $name_fn(value: $ty) -> &'static str {
            match value {
                $($ty::$variant => $name,)+
            }
        }
        /// Every value, in declaration (tag) order.
        const $all: &[$ty] = &[$($ty::$variant,)+];
    };
}

variants!(request_variant, REQUEST_VARIANTS, Request {
    Request::Ping => "ping",
    Request::RefreshToken { .. } => "refresh_token",
    Request::RaceCreate(_) => "race_create",
    Request::RaceUpdate(_) => "race_update",
    Request::RaceList => "race_list",
    Request::RaceGet { .. } => "race_get",
    Request::RaceStart { .. } => "race_start",
    Request::RaceFinish { .. } => "race_finish",
    Request::RaceCancel { .. } => "race_cancel",
    Request::Backup => "backup",
    Request::RacerRegister { .. } => "racer_register",
    Request::RacerList { .. } => "racer_list",
    Request::Fixes { .. } => "fixes",
    Request::RaceStandings { .. } => "race_standings",
    Request::RaceSubscribe { .. } => "race_subscribe",
    Request::RaceResults { .. } => "race_results",
    Request::RaceReplay { .. } => "race_replay",
    Request::RaceShare { .. } => "race_share",
    Request::MailSubmit(_) => "mail_submit",
    Request::MailStatus { .. } => "mail_status",
    Request::MailList { .. } => "mail_list",
    Request::MailFailed { .. } => "mail_failed",
    Request::MailRetry { .. } => "mail_retry",
    Request::MailRetryAllDead => "mail_retry_all_dead",
    Request::PatrolProfile { .. } => "patrol_profile",
    Request::DutyStart { .. } => "duty_start",
    Request::DutyEnd => "duty_end",
    Request::PatrolPosition { .. } => "patrol_position",
    Request::OfficersNearest { .. } => "officers_nearest",
    Request::ConnectRequest { .. } => "connect_request",
    Request::ConnectAnswer { .. } => "connect_answer",
    Request::RewardsBalance => "rewards_balance",
    Request::RewardsHistory { .. } => "rewards_history",
    Request::OffersList => "offers_list",
    Request::CharitiesList => "charities_list",
    Request::RewardsRedeem { .. } => "rewards_redeem",
    Request::RewardsDonate { .. } => "rewards_donate",
    Request::MessageSend { .. } => "message_send",
    Request::MessageHistory { .. } => "message_history",
    Request::PatrolImport(_) => "patrol_import",
    Request::PatrolReport { .. } => "patrol_report",
    Request::RaceDisqualify { .. } => "race_disqualify",
    Request::RaceReinstate { .. } => "race_reinstate",
    Request::RaceDeviceBind { .. } => "race_device_bind",
    Request::RaceDeviceRevoke { .. } => "race_device_revoke",
    Request::RaceDevices { .. } => "race_devices",
    Request::RacerLink { .. } => "racer_link",
});

variants!(reply_variant, REPLY_VARIANTS, Reply {
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
});

variants!(push_variant, PUSH_VARIANTS, Push {
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
});

variants!(server_frame_variant, SERVER_FRAME_VARIANTS, ServerFrame {
    ServerFrame::Reply { .. } => "reply",
    ServerFrame::Error { .. } => "error",
    ServerFrame::Push(_) => "push",
});

variants!(import_batch_variant, IMPORT_BATCH_VARIANTS, ImportBatch {
    ImportBatch::Officers(_) => "officers",
    ImportBatch::Offers(_) => "offers",
    ImportBatch::Charities(_) => "charities",
});

unit_variants!(error_code_name, ALL_ERROR_CODES, ErrorCode {
    BadRequest => "bad_request",
    UnknownType => "unknown_type",
    InvalidArgument => "invalid_argument",
    InvalidCourse => "invalid_course",
    NotFound => "not_found",
    InvalidTransition => "invalid_transition",
    Forbidden => "forbidden",
    TokenExpired => "token_expired",
    Unauthenticated => "unauthenticated",
    RateLimited => "rate_limited",
    Unavailable => "unavailable",
    Internal => "internal",
    InsufficientPoints => "insufficient_points",
    Conflict => "conflict",
    TooFar => "too_far",
    BadTime => "bad_time",
});

unit_variants!(role_name, ALL_ROLES, Role {
    Admin => "admin",
    Racer => "racer",
    Spectator => "spectator",
    Officer => "officer",
    Citizen => "citizen",
});

unit_variants!(race_state_name, ALL_RACE_STATES, RaceStateView {
    Scheduled => "scheduled",
    Live => "live",
    Finished => "finished",
    Cancelled => "cancelled",
});

unit_variants!(result_status_name, ALL_RESULT_STATUSES, ResultStatusView {
    Finished => "finished",
    Racing => "racing",
    Dnf => "dnf",
    Dns => "dns",
    Dsq => "dsq",
});

/// The WebSocket close codes of `net::close_code`, by constant name. Constants cannot be
/// matched exhaustively: a new close code must be added here by hand.
const CLOSE_CODES: &[(&str, u16)] = &[
    ("NORMAL", close_code::NORMAL),
    ("GOING_AWAY", close_code::GOING_AWAY),
    ("PROTOCOL_ERROR", close_code::PROTOCOL_ERROR),
    ("UNSUPPORTED_DATA", close_code::UNSUPPORTED_DATA),
    ("INVALID_PAYLOAD", close_code::INVALID_PAYLOAD),
    ("POLICY_VIOLATION", close_code::POLICY_VIOLATION),
    ("MESSAGE_TOO_BIG", close_code::MESSAGE_TOO_BIG),
    ("INTERNAL_ERROR", close_code::INTERNAL_ERROR),
    ("TOO_SLOW", close_code::TOO_SLOW),
    ("SESSION_ENDED", close_code::SESSION_ENDED),
];

/// A sample frame: which direction decides the codec functions used.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// Client to server.
    Client(Box<ClientFrame>),
    /// Server to client.
    Server(Box<ServerFrame>),
}

/// One golden sample: a unique name (the fixture key) and a frame.
#[derive(Debug, Clone)]
struct Sample {
    /// The fixture key: `request.*`, `reply.*`, `push.*`, `error*`, `error_code.*`, `doc.*`.
    name: String,
    /// What is encoded.
    frame: Frame,
}

/// 2026-11-01T09:00:00Z, the planned start every sample is relative to (no clock).
const T0: i64 = 1_793_523_600_000;

fn s(text: &str) -> String {
    text.to_string()
}

fn client(name: &str, id: u64, request: Request) -> Sample {
    Sample {
        name: format!("request.{name}"),
        frame: Frame::Client(Box::new(ClientFrame { id, request })),
    }
}

fn reply(name: &str, id: u64, reply: Reply) -> Sample {
    Sample {
        name: format!("reply.{name}"),
        frame: Frame::Server(Box::new(ServerFrame::Reply { id, reply })),
    }
}

fn push(name: &str, push: Push) -> Sample {
    Sample {
        name: format!("push.{name}"),
        frame: Frame::Server(Box::new(ServerFrame::Push(push))),
    }
}

fn error(name: &str, id: Option<u64>, code: ErrorCode, message: &str) -> Sample {
    Sample {
        name: name.to_string(),
        frame: Frame::Server(Box::new(ServerFrame::Error {
            id,
            error: WireError {
                code,
                message: s(message),
            },
        })),
    }
}

/// A course with quotes, a newline and an XML declaration, so JSON escaping is fixed too.
const GPX: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" \
creator=\"peloton\"><trk><trkseg><trkpt lat=\"46.0569\" lon=\"14.5058\"/><trkpt lat=\"46.0612\" \
lon=\"14.5120\"/></trkseg></trk></gpx>\n";

fn race_view(state: RaceStateView) -> RaceView {
    let live_or_later = !matches!(state, RaceStateView::Scheduled);
    RaceView {
        id: s("ljubljana-2026"),
        name: s("Ljubljanski maraton – Étape 1"),
        state,
        start_at_ms: T0,
        cutoff_at_ms: Some(T0 + 6 * 3_600_000),
        created_at_ms: T0 - 30 * 86_400_000,
        started_at_ms: live_or_later.then_some(T0 + 1_250),
        finished_at_ms: matches!(state, RaceStateView::Finished).then_some(T0 + 5 * 3_600_000),
        cancelled_at_ms: matches!(state, RaceStateView::Cancelled).then_some(T0 + 600_000),
        cancel_reason: matches!(state, RaceStateView::Cancelled).then(|| s("storm warning")),
        course_points: 1_234,
        course_length_m: 42_195.4,
    }
}

fn leader() -> StandingView {
    StandingView {
        bib: 7,
        rank: 1,
        progress_dm: 421_954,
        gap_ms: Some(0),
        finished_at_ms: Some(T0 + 7_523_456),
        off_course: false,
        lat_e7: 460_569_000,
        lon_e7: 145_058_000,
        speed_cmps: Some(562),
        eta_ms: Some(0),
        checkpoints_passed: 3,
        last_split_ms: Some(T0 + 7_523_456),
        cut_suspected: false,
    }
}

fn chaser() -> StandingView {
    // Negative coordinates (zigzag), a racer with no fix-derived pace yet.
    StandingView {
        bib: 1_042,
        rank: 2,
        progress_dm: 250,
        gap_ms: None,
        finished_at_ms: None,
        off_course: true,
        lat_e7: -339_249_000,
        lon_e7: -1_812_000,
        speed_cmps: None,
        eta_ms: None,
        checkpoints_passed: 0,
        last_split_ms: None,
        cut_suspected: true,
    }
}

fn racers() -> Vec<RacerView> {
    vec![
        RacerView {
            bib: 7,
            name: s("Ana Novak"),
            team: Some(s("Team Triglav")),
            email: Some(s("ana@example.org")),
        },
        RacerView {
            bib: 1_042,
            name: s("Zoë O'Brien"),
            team: None,
            email: None,
        },
    ]
}

fn result_row(status: ResultStatusView) -> ResultView {
    let finished = matches!(status, ResultStatusView::Finished);
    let ranked = matches!(
        status,
        ResultStatusView::Finished | ResultStatusView::Racing
    );
    ResultView {
        rank: ranked.then_some(if finished { 1 } else { 2 }),
        bib: 7,
        name: s("Ana Novak"),
        team: finished.then(|| s("Team Triglav")),
        time_ms: finished.then_some(7_523_456),
        avg_speed_kmh: finished.then_some(20.190_5),
        distance_dm: if finished { 421_954 } else { 18_300 },
        status,
        splits_ms: if finished {
            vec![1_800_000, 3_700_250, 7_523_456]
        } else {
            Vec::new()
        },
        reason: match status {
            ResultStatusView::Dnf => Some(s("retired at km 12")),
            ResultStatusView::Dns => Some(s("did not start")),
            ResultStatusView::Dsq => Some(s("confirmed cut at the bridge")),
            _ => None,
        },
        off_course: if matches!(status, ResultStatusView::Dsq) {
            vec![
                OffCourseView {
                    from_ms: T0 + 1_000_000,
                    to_ms: Some(T0 + 1_090_000),
                    max_offset_m: 412,
                },
                OffCourseView {
                    from_ms: T0 + 2_000_000,
                    to_ms: None,
                    max_offset_m: 70_000,
                },
            ]
        } else {
            Vec::new()
        },
        cuts: if matches!(status, ResultStatusView::Dsq) {
            vec![
                CutView {
                    at_ms: T0 + 1_090_000,
                    from_dm: 51_200,
                    to_dm: 98_700,
                    held: true,
                },
                CutView {
                    at_ms: T0 + 2_500_000,
                    from_dm: 120_000,
                    to_dm: 121_000,
                    held: false,
                },
            ]
        } else {
            Vec::new()
        },
    }
}

fn mail_job(state: &str, detail: bool) -> MailJobView {
    MailJobView {
        id: s("9f3c2a1b0e4d5c6b7a8f9e0d"),
        state: s(state),
        attempts: if detail { 3 } else { 0 },
        failures: if detail { 2 } else { 0 },
        transport: s(if detail { "smtp" } else { "http" }),
        to: s("ana@example.org"),
        subject: s("Your finisher certificate"),
        correlation_id: s("order-2026-11-01"),
        sequence: 4_294_967_296,
        index: 0,
        accepted_at_ms: T0 + 8_000_000,
        next_attempt_at_ms: detail.then_some(T0 + 8_300_000),
        sent_at_ms: (state == "sent").then_some(T0 + 8_000_900),
        last_error: detail.then(|| s("451 4.7.1 greylisted, try again")),
    }
}

fn mail_failure(attempt: u32) -> MailFailureView {
    MailFailureView {
        id: s("9f3c2a1b0e4d5c6b7a8f9e0d"),
        to: s("ana@example.org"),
        attempt,
        at_ms: T0 + 8_000_000 + i64::from(attempt) * 60_000,
        error: s("451 4.7.1 greylisted, try again"),
    }
}

fn officer_nearby() -> OfficerNearbyView {
    OfficerNearbyView {
        officer_id: s("o-17"),
        display_name: s("Officer Kovač"),
        lat_e7: 488_566_000,
        lon_e7: 23_522_000,
        distance_m: 250,
        bearing_deg: 315,
    }
}

fn connection(points: u64) -> ConnectionView {
    ConnectionView {
        connection_id: s("c-5d1e"),
        officer_id: s("o-17"),
        citizen_id: s("citizen-ana"),
        with_name: s("Officer Kovač"),
        points,
        at_ms: T0 + 42_000,
    }
}

fn direct_message(seq: u64) -> DirectMessageView {
    DirectMessageView {
        from: s("citizen-ana"),
        to: s("o-17"),
        seq,
        at_ms: T0 + 60_000 * seq as i64,
        text: s("Thanks for the help!\n\"Ana\" 🚲"),
    }
}

fn offers() -> Vec<OfferRow> {
    vec![
        OfferRow {
            id: s("coffee"),
            retailer: s("Kavarna Center"),
            title: s("One coffee"),
            points: 10,
        },
        OfferRow {
            id: s("cinema"),
            retailer: s("Kino Šiška"),
            title: s("Two tickets"),
            points: 300,
        },
    ]
}

fn charities() -> Vec<CharityRow> {
    vec![CharityRow {
        id: s("red-cross"),
        name: s("Rdeči križ"),
    }]
}

fn race_tick(seq: u64, full: bool) -> RaceTick {
    RaceTick {
        race_id: s("ljubljana-2026"),
        seq,
        full,
        spectators: 1_337,
        standings: if full {
            vec![leader(), chaser()]
        } else {
            vec![chaser()]
        },
    }
}

fn request_samples() -> Vec<Sample> {
    vec![
        // Ping carries the request-id varint boundaries (1, 3, 5, 9 bytes).
        client("ping", 7, Request::Ping),
        client("ping.id_0", 0, Request::Ping),
        client("ping.id_250", 250, Request::Ping),
        client("ping.id_251", 251, Request::Ping),
        client("ping.id_65536", 65_536, Request::Ping),
        client("ping.id_u64_max", u64::MAX, Request::Ping),
        client(
            "refresh_token",
            8,
            Request::RefreshToken {
                token: s("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl"),
            },
        ),
        client(
            "race_create",
            9,
            Request::RaceCreate(RaceCreate {
                name: s("Ljubljanski maraton – Étape 1"),
                course_gpx: s(GPX),
                start_at_ms: T0,
                cutoff_at_ms: Some(T0 + 6 * 3_600_000),
            }),
        ),
        client(
            "race_create.no_cutoff",
            10,
            Request::RaceCreate(RaceCreate {
                name: s("Night ride"),
                course_gpx: s(GPX),
                start_at_ms: T0,
                cutoff_at_ms: None,
            }),
        ),
        client(
            "race_update",
            11,
            Request::RaceUpdate(RaceUpdate {
                id: s("ljubljana-2026"),
                name: Some(s("Ljubljanski maraton")),
                course_gpx: None,
                start_at_ms: Some(T0 + 900_000),
                cutoff_at_ms: None,
                clear_cutoff: true,
            }),
        ),
        client(
            "race_update.all_set",
            12,
            Request::RaceUpdate(RaceUpdate {
                id: s("ljubljana-2026"),
                name: Some(s("Ljubljanski maraton")),
                course_gpx: Some(s(GPX)),
                start_at_ms: Some(T0),
                cutoff_at_ms: Some(T0 + 3_600_000),
                clear_cutoff: false,
            }),
        ),
        client("race_list", 13, Request::RaceList),
        client(
            "race_get",
            14,
            Request::RaceGet {
                id: s("ljubljana-2026"),
            },
        ),
        client(
            "race_start",
            15,
            Request::RaceStart {
                id: s("ljubljana-2026"),
            },
        ),
        client(
            "race_finish",
            16,
            Request::RaceFinish {
                id: s("ljubljana-2026"),
            },
        ),
        client(
            "race_cancel",
            17,
            Request::RaceCancel {
                id: s("ljubljana-2026"),
                reason: Some(s("storm warning")),
            },
        ),
        client(
            "race_cancel.no_reason",
            18,
            Request::RaceCancel {
                id: s("ljubljana-2026"),
                reason: None,
            },
        ),
        client("backup", 19, Request::Backup),
        client(
            "racer_register",
            20,
            Request::RacerRegister {
                race_id: s("ljubljana-2026"),
                racers: racers(),
            },
        ),
        client(
            "racer_list",
            21,
            Request::RacerList {
                race_id: s("ljubljana-2026"),
            },
        ),
        client(
            "fixes",
            22,
            Request::Fixes {
                fixes: vec![
                    WireFix {
                        at_ms: T0 + 61_000,
                        lat_e7: 460_569_000,
                        lon_e7: 145_058_000,
                        accuracy_dm: 50,
                        speed_cmps: Some(830),
                        elevation_dm: Some(2_954),
                    },
                    WireFix {
                        at_ms: T0 + 62_000,
                        lat_e7: -339_249_000,
                        lon_e7: -1_812_000,
                        accuracy_dm: 1_200,
                        speed_cmps: None,
                        elevation_dm: Some(-45),
                    },
                    WireFix {
                        at_ms: T0 + 63_000,
                        lat_e7: 900_000_000,
                        lon_e7: -1_800_000_000,
                        accuracy_dm: 0,
                        speed_cmps: Some(0),
                        elevation_dm: None,
                    },
                ],
            },
        ),
        client("fixes.empty", 23, Request::Fixes { fixes: Vec::new() }),
        client(
            "race_standings",
            24,
            Request::RaceStandings {
                race_id: s("ljubljana-2026"),
            },
        ),
        client(
            "race_subscribe",
            25,
            Request::RaceSubscribe {
                race_id: s("ljubljana-2026"),
                since_seq: Some(4_711),
            },
        ),
        client(
            "race_subscribe.fresh",
            26,
            Request::RaceSubscribe {
                race_id: s("ljubljana-2026"),
                since_seq: None,
            },
        ),
        client(
            "race_results",
            27,
            Request::RaceResults {
                race_id: s("ljubljana-2026"),
            },
        ),
        client(
            "race_replay",
            28,
            Request::RaceReplay {
                race_id: s("ljubljana-2026"),
                speed: 60.0,
                from_ms: Some(T0 + 1_800_000),
            },
        ),
        client(
            "race_replay.from_start",
            29,
            Request::RaceReplay {
                race_id: s("ljubljana-2026"),
                speed: 0.25,
                from_ms: None,
            },
        ),
        client(
            "race_share",
            30,
            Request::RaceShare {
                race_id: s("ljubljana-2026"),
                ttl_secs: 86_400,
            },
        ),
        client(
            "mail_submit",
            31,
            Request::MailSubmit(MailEnvelope {
                correlation_id: s("order-2026-11-01"),
                sequence: 2,
                sent_at_ms: T0 + 8_000_000,
                messages: vec![
                    MailMessageView {
                        to: s("ana@example.org"),
                        subject: s("Your finisher certificate"),
                        body: s("Dear Ana,\n\tcongratulations: 2:05:23.\n"),
                        contact: Some(s("ana")),
                    },
                    MailMessageView {
                        to: s("zoe@example.org"),
                        subject: s("Results"),
                        body: s("See you next year."),
                        contact: None,
                    },
                ],
            }),
        ),
        client(
            "mail_status",
            32,
            Request::MailStatus {
                id: s("9f3c2a1b0e4d5c6b7a8f9e0d"),
            },
        ),
        client(
            "mail_list",
            33,
            Request::MailList {
                state: Some(s("retry_waiting")),
                limit: 100,
            },
        ),
        client(
            "mail_list.all_states",
            34,
            Request::MailList {
                state: None,
                limit: 10_000,
            },
        ),
        client("mail_failed", 35, Request::MailFailed { limit: 50 }),
        client(
            "mail_retry",
            36,
            Request::MailRetry {
                id: s("9f3c2a1b0e4d5c6b7a8f9e0d"),
            },
        ),
        client("mail_retry_all_dead", 37, Request::MailRetryAllDead),
        client(
            "patrol_profile",
            38,
            Request::PatrolProfile {
                display_name: s("Ana N."),
                email: Some(s("ana@example.org")),
            },
        ),
        client(
            "patrol_profile.forget_email",
            39,
            Request::PatrolProfile {
                display_name: s("Ana N."),
                email: None,
            },
        ),
        client("duty_start", 40, Request::DutyStart { minutes: Some(480) }),
        client(
            "duty_start.default",
            41,
            Request::DutyStart { minutes: None },
        ),
        client("duty_end", 42, Request::DutyEnd),
        client(
            "patrol_position",
            43,
            Request::PatrolPosition {
                lat_e7: 488_566_000,
                lon_e7: 23_522_000,
                accuracy_m: Some(8.5),
            },
        ),
        client(
            "patrol_position.no_accuracy",
            44,
            Request::PatrolPosition {
                lat_e7: -339_249_000,
                lon_e7: -1_812_000,
                accuracy_m: None,
            },
        ),
        client(
            "officers_nearest",
            45,
            Request::OfficersNearest { count: 5 },
        ),
        client(
            "connect_request",
            46,
            Request::ConnectRequest {
                officer_id: s("o-17"),
            },
        ),
        client(
            "connect_answer",
            47,
            Request::ConnectAnswer {
                request_id: s("c-5d1e"),
                accept: true,
            },
        ),
        client(
            "connect_answer.decline",
            48,
            Request::ConnectAnswer {
                request_id: s("c-5d1f"),
                accept: false,
            },
        ),
        client("rewards_balance", 49, Request::RewardsBalance),
        client(
            "rewards_history",
            50,
            Request::RewardsHistory {
                before: Some(120),
                limit: 20,
            },
        ),
        client(
            "rewards_history.newest",
            51,
            Request::RewardsHistory {
                before: None,
                limit: 500,
            },
        ),
        client("offers_list", 52, Request::OffersList),
        client("charities_list", 53, Request::CharitiesList),
        client(
            "rewards_redeem",
            54,
            Request::RewardsRedeem {
                request_id: s("redeem-2026-11-01.1"),
                offer_id: s("coffee"),
            },
        ),
        client(
            "rewards_donate",
            55,
            Request::RewardsDonate {
                request_id: s("donate_1"),
                charity_id: s("red-cross"),
                points: 25,
            },
        ),
        client(
            "message_send",
            56,
            Request::MessageSend {
                request_id: s("m-1"),
                to: s("o-17"),
                text: s("Thanks for the help!\n\"Ana\" 🚲"),
            },
        ),
        client(
            "message_history",
            57,
            Request::MessageHistory {
                with: s("o-17"),
                before_seq: Some(40),
                limit: 50,
            },
        ),
        client(
            "message_history.newest",
            58,
            Request::MessageHistory {
                with: s("o-17"),
                before_seq: None,
                limit: 500,
            },
        ),
        client(
            "patrol_import.officers",
            59,
            Request::PatrolImport(ImportBatch::Officers(vec![
                OfficerRow {
                    id: s("o-17"),
                    display_name: s("Officer Kovač"),
                    precinct: s("center"),
                    email: Some(s("kovac@police.example")),
                },
                OfficerRow {
                    id: s("o-18"),
                    display_name: s("Officer Horvat"),
                    precinct: s("bezigrad"),
                    email: None,
                },
            ])),
        ),
        client(
            "patrol_import.offers",
            60,
            Request::PatrolImport(ImportBatch::Offers(offers())),
        ),
        client(
            "patrol_import.charities",
            61,
            Request::PatrolImport(ImportBatch::Charities(charities())),
        ),
        client(
            "patrol_report",
            62,
            Request::PatrolReport {
                from: s("2026-11-01"),
                to: s("2026-11-30"),
            },
        ),
        client(
            "race_disqualify",
            63,
            Request::RaceDisqualify {
                race_id: s("ljubljana-2026"),
                bib: 1_042,
                reason: s("confirmed cut at the bridge"),
            },
        ),
        client(
            "race_reinstate",
            64,
            Request::RaceReinstate {
                race_id: s("ljubljana-2026"),
                bib: 1_042,
            },
        ),
        client(
            "race_device_bind",
            65,
            Request::RaceDeviceBind {
                race_id: s("ljubljana-2026"),
                bib: 1_042,
                device_id: Some(s("traccar-218604")),
            },
        ),
        client(
            "race_device_bind.generated",
            66,
            Request::RaceDeviceBind {
                race_id: s("ljubljana-2026"),
                bib: 1_042,
                device_id: None,
            },
        ),
        client(
            "race_device_revoke",
            67,
            Request::RaceDeviceRevoke {
                race_id: s("ljubljana-2026"),
                bib: 1_042,
            },
        ),
        client(
            "race_devices",
            68,
            Request::RaceDevices {
                race_id: s("ljubljana-2026"),
            },
        ),
        client(
            "racer_link",
            69,
            Request::RacerLink {
                race_id: s("ljubljana-2026"),
                bib: 1_042,
                ttl_secs: 86_400,
            },
        ),
    ]
}

fn reply_samples() -> Vec<Sample> {
    let mut samples = vec![
        reply(
            "pong",
            7,
            Reply::Pong {
                server_time_ms: T0 + 123,
            },
        ),
        reply(
            "token_refreshed",
            8,
            Reply::TokenRefreshed {
                expires_at_ms: T0 + 86_400_000,
            },
        ),
        reply("race", 9, Reply::Race(race_view(RaceStateView::Live))),
        reply(
            "races",
            13,
            Reply::Races(ALL_RACE_STATES.iter().map(|&st| race_view(st)).collect()),
        ),
        reply("races.empty", 13, Reply::Races(Vec::new())),
        reply(
            "backup_done",
            19,
            Reply::BackupDone(BackupInfo {
                bytes: 10_485_760,
                records: 123_456,
                crc32: 0xdead_beef,
            }),
        ),
        reply("racers", 21, Reply::Racers(racers())),
        reply("registered", 20, Reply::Registered { racers: 2 }),
        reply(
            "fixes_ack",
            22,
            Reply::FixesAck {
                accepted: 2,
                ignored: 1,
                last_at_ms: Some(T0 + 63_000),
            },
        ),
        reply(
            "fixes_ack.nothing",
            23,
            Reply::FixesAck {
                accepted: 0,
                ignored: 0,
                last_at_ms: None,
            },
        ),
        reply("standings", 24, Reply::Standings(vec![leader(), chaser()])),
        reply(
            "subscribed",
            26,
            Reply::Subscribed(RaceSnapshot {
                race: race_view(RaceStateView::Live),
                course: vec![
                    CoursePoint {
                        lat_e7: 460_569_000,
                        lon_e7: 145_058_000,
                    },
                    CoursePoint {
                        lat_e7: 460_612_000,
                        lon_e7: 145_120_000,
                    },
                ],
                checkpoints: vec![
                    CheckpointView {
                        name: s("Bridge"),
                        lat_e7: 460_590_000,
                        lon_e7: 145_090_000,
                        distance_dm: 51_200,
                        mandatory: true,
                    },
                    CheckpointView {
                        name: s("Finish"),
                        lat_e7: 460_612_000,
                        lon_e7: 145_120_000,
                        distance_dm: 421_954,
                        mandatory: false,
                    },
                ],
                racers: racers()
                    .into_iter()
                    .map(|r| RacerView { email: None, ..r })
                    .collect(),
                standings: vec![leader(), chaser()],
                seq: 4_711,
                spectators: 1_337,
                resumed: false,
            }),
        ),
        reply(
            "subscribed.resumed",
            25,
            Reply::Subscribed(RaceSnapshot {
                race: race_view(RaceStateView::Finished),
                course: Vec::new(),
                checkpoints: Vec::new(),
                racers: Vec::new(),
                standings: Vec::new(),
                seq: 4_711,
                spectators: 1,
                resumed: true,
            }),
        ),
        reply(
            "results",
            27,
            Reply::Results {
                rows: ALL_RESULT_STATUSES
                    .iter()
                    .map(|&st| result_row(st))
                    .collect(),
                stats: RaceStatsView {
                    entrants: 5,
                    starters: 4,
                    finishers: 1,
                    dnf: 1,
                    dns: 1,
                    winning_time_ms: Some(7_523_456),
                    median_time_ms: Some(7_523_456),
                    fastest_avg_speed_kmh: Some(20.190_5),
                    total_distance_m: 48_720.9,
                    dsq: 1,
                },
            },
        ),
        reply(
            "results.nobody_finished",
            27,
            Reply::Results {
                rows: Vec::new(),
                stats: RaceStatsView {
                    entrants: 0,
                    starters: 0,
                    finishers: 0,
                    dnf: 0,
                    dns: 0,
                    winning_time_ms: None,
                    median_time_ms: None,
                    fastest_avg_speed_kmh: None,
                    total_distance_m: 0.0,
                    dsq: 0,
                },
            },
        ),
        reply(
            "replay_started",
            28,
            Reply::ReplayStarted {
                from_ms: Some(T0 + 61_000),
                to_ms: Some(T0 + 7_523_456),
            },
        ),
        reply(
            "replay_started.nothing",
            29,
            Reply::ReplayStarted {
                from_ms: None,
                to_ms: None,
            },
        ),
        reply(
            "shared",
            30,
            Reply::Shared {
                race_id: s("ljubljana-2026"),
                token: s("eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic3BlY3RhdG9yIn0.c2lnbmF0dXJl"),
                expires_at_ms: T0 + 86_400_000,
            },
        ),
        reply(
            "mail_jobs",
            31,
            Reply::MailJobs(vec![mail_job("accepted", false), mail_job("sent", false)]),
        ),
        reply(
            "mail_job",
            32,
            Reply::MailJob(Box::new(MailJobDetailView {
                job: mail_job("retry_waiting", true),
                message_id: s("<9f3c2a1b0e4d5c6b7a8f9e0d@peloton.example>"),
                failures: vec![mail_failure(1), mail_failure(2)],
            })),
        ),
        reply(
            "mail_failures",
            35,
            Reply::MailFailures(vec![mail_failure(2), mail_failure(1)]),
        ),
        reply("profile_saved", 38, Reply::ProfileSaved),
        reply(
            "on_duty",
            40,
            Reply::OnDuty {
                until_ms: T0 + 8 * 3_600_000,
            },
        ),
        reply("off_duty", 42, Reply::OffDuty),
        reply(
            "position_ack",
            43,
            Reply::PositionAck {
                cell_changed: true,
                duty_until_ms: Some(T0 + 8 * 3_600_000),
            },
        ),
        reply(
            "position_ack.off_duty",
            44,
            Reply::PositionAck {
                cell_changed: false,
                duty_until_ms: None,
            },
        ),
        reply(
            "officers",
            45,
            Reply::Officers(vec![
                officer_nearby(),
                OfficerNearbyView {
                    officer_id: s("o-18"),
                    display_name: s("Officer Horvat"),
                    lat_e7: -339_249_000,
                    lon_e7: -1_812_000,
                    distance_m: 1_500,
                    bearing_deg: 0,
                },
            ]),
        ),
        reply(
            "connect_pending",
            46,
            Reply::ConnectPending {
                request_id: s("c-5d1e"),
                expires_at_ms: T0 + 120_000,
            },
        ),
        reply(
            "connect_answered",
            47,
            Reply::ConnectAnswered {
                connection: Some(connection(10)),
            },
        ),
        reply(
            "connect_answered.declined",
            48,
            Reply::ConnectAnswered { connection: None },
        ),
        reply("balance", 49, Reply::Balance { points: 1_250 }),
        reply(
            "rewards_history",
            50,
            Reply::RewardsHistory(vec![
                RewardEntryView {
                    index: 119,
                    at_ms: T0 + 50_000,
                    delta: -10,
                    cause: s("redemption"),
                    reference: s("redeem-2026-11-01.1"),
                    detail: s("coffee"),
                },
                RewardEntryView {
                    index: 118,
                    at_ms: T0 + 42_000,
                    delta: 10,
                    cause: s("connection"),
                    reference: s("c-5d1e"),
                    detail: s("o-17"),
                },
            ]),
        ),
        reply("offers", 52, Reply::Offers(offers())),
        reply("charities", 53, Reply::Charities(charities())),
        reply(
            "redeemed",
            54,
            Reply::Redeemed {
                voucher_code: s("PLTN-7Q3K-M2XA-9BCD"),
                points: 10,
                balance: 1_240,
            },
        ),
        reply(
            "donated",
            55,
            Reply::Donated {
                points: 25,
                balance: 1_215,
            },
        ),
        reply("message_sent", 56, Reply::MessageSent(direct_message(41))),
        reply(
            "messages",
            57,
            Reply::Messages(vec![direct_message(39), direct_message(38)]),
        ),
        reply(
            "imported",
            59,
            Reply::Imported {
                kind: s("officers"),
                rows: 2,
                total: 312,
            },
        ),
        reply(
            "patrol_report",
            62,
            Reply::PatrolReport(vec![
                ReportRowView {
                    date: s("2026-11-01"),
                    precinct: s("center"),
                    connections: 14,
                    points_awarded: 280,
                    points_redeemed: 40,
                    points_donated: 25,
                },
                ReportRowView {
                    date: s("2026-11-01"),
                    precinct: s("none"),
                    connections: 0,
                    points_awarded: 0,
                    points_redeemed: 0,
                    points_donated: 5,
                },
            ]),
        ),
        reply(
            "devices",
            63,
            Reply::Devices {
                race_id: s("r"),
                devices: vec![DeviceView {
                    bib: 7,
                    device_id: s("k3vq7p2mxa9d4wtb"),
                    bound_at_ms: 1_795_856_400_000,
                }],
            },
        ),
    ];
    // The reply id's varint width, once at the largest.
    samples.push(reply(
        "pong.id_u64_max",
        u64::MAX,
        Reply::Pong { server_time_ms: -1 },
    ));
    samples
}

fn push_samples() -> Vec<Sample> {
    let mut samples: Vec<Sample> = ALL_ROLES
        .iter()
        .map(|&role| {
            push(
                &format!("welcome.{}", role_name(role)),
                Push::Welcome(Welcome {
                    protocol: PROTOCOL_VERSION,
                    server_version: s("0.1.0"),
                    role,
                    sub: s(match role {
                        Role::Racer => "7",
                        Role::Officer => "o-17",
                        Role::Citizen => "citizen-ana",
                        Role::Admin | Role::Spectator => "ops",
                    }),
                    race: matches!(role, Role::Racer | Role::Spectator)
                        .then(|| s("ljubljana-2026")),
                    expires_at_ms: T0 + 86_400_000,
                }),
            )
        })
        .collect();
    samples.extend([
        push(
            "backup_chunk",
            Push::BackupChunk {
                request_id: 19,
                offset: 65_536,
                data: vec![0, 1, 2, 127, 128, 250, 251, 255],
            },
        ),
        push("race_update", Push::RaceUpdate(race_tick(4_712, false))),
        push("race_update.full", Push::RaceUpdate(race_tick(4_714, true))),
        push("replay_tick", Push::ReplayTick(race_tick(1, true))),
        push(
            "replay_done",
            Push::ReplayDone {
                race_id: s("ljubljana-2026"),
            },
        ),
        push(
            "duty_ended",
            Push::DutyEnded {
                reason: s("expired"),
                at_ms: T0 + 8 * 3_600_000,
            },
        ),
        push("officer_nearby", Push::OfficerNearby(officer_nearby())),
        push(
            "officer_gone",
            Push::OfficerGone {
                officer_id: s("o-17"),
            },
        ),
        push(
            "connect_requested",
            Push::ConnectRequested {
                request_id: s("c-5d1e"),
                citizen_id: s("citizen-ana"),
                display_name: s("Ana N."),
                distance_m: 50,
                expires_at_ms: T0 + 120_000,
            },
        ),
        push(
            "connect_closed",
            Push::ConnectClosed {
                request_id: s("c-5d1f"),
                outcome: s("declined"),
            },
        ),
        push(
            "connection_established",
            Push::ConnectionEstablished(connection(0)),
        ),
        push("direct_message", Push::DirectMessage(direct_message(42))),
        push(
            "pace",
            Push::Pace {
                interval_ms: 1_000,
                reason: s("checkpoint"),
            },
        ),
        push(
            "race_catch_up",
            Push::RaceCatchUp(RaceCatchUp {
                race_id: s("ljubljana-2026"),
                since_seq: 4_709,
                seq: 4_712,
                spectators: 1_337,
                standings: vec![leader(), chaser()],
            }),
        ),
    ]);
    samples
}

fn error_samples() -> Vec<Sample> {
    let mut samples = vec![
        error(
            "error",
            Some(15),
            ErrorCode::InvalidTransition,
            "race `ljubljana-2026` is finished; only a scheduled race can start",
        ),
        error(
            "error.no_id",
            None,
            ErrorCode::BadRequest,
            "cannot read the request id: unexpected end",
        ),
    ];
    samples.extend(ALL_ERROR_CODES.iter().map(|&code| {
        error(
            &format!("error_code.{}", error_code_name(code)),
            Some(9),
            code,
            "m",
        )
    }));
    samples
}

/// The worked examples of PROTOCOL.md §5.7, with the bytes that section spells out, so the
/// document and the fixture cannot drift apart: `(sample, frame, hex from PROTOCOL.md)`.
fn protocol_md_examples() -> Vec<(Sample, &'static str)> {
    let race_cancel = |reason: Option<&str>| Request::RaceCancel {
        id: s("r1"),
        reason: reason.map(s),
    };
    vec![
        (client("ping", 7, Request::Ping), "0700"),
        (client("ping.id_300", 300, Request::Ping), "fb2c0100"),
        (
            client("race_get", 8, Request::RaceGet { id: s("r1") }),
            "0805027231",
        ),
        (client("race_list", 12, Request::RaceList), "0c04"),
        (client("backup", 13, Request::Backup), "0d09"),
        (
            client(
                "refresh_token",
                2,
                Request::RefreshToken { token: s("abc") },
            ),
            "020103616263",
        ),
        (client("race_cancel", 9, race_cancel(None)), "090802723100"),
        (
            client("race_cancel.storm", 9, race_cancel(Some("storm"))),
            "0908027231010573746f726d",
        ),
        (
            client(
                "race_create",
                10,
                Request::RaceCreate(RaceCreate {
                    name: s("Tour"),
                    course_gpx: s("<gpx/>"),
                    start_at_ms: 1_795_856_400_000,
                    cutoff_at_ms: None,
                }),
            ),
            "0a 02 04546f7572 063c6770782f3e fd00fdc34244030000 00",
        ),
        (
            client(
                "race_create.cutoff",
                10,
                Request::RaceCreate(RaceCreate {
                    name: s("Tour"),
                    course_gpx: s("<gpx/>"),
                    start_at_ms: 1_795_856_400_000,
                    cutoff_at_ms: Some(1_795_878_000_000),
                }),
            ),
            "0a0204546f7572063c6770782f3efd00fdc3424403000001fd002b574544030000",
        ),
        (
            client(
                "race_update",
                11,
                Request::RaceUpdate(RaceUpdate {
                    id: s("r1"),
                    name: None,
                    course_gpx: None,
                    start_at_ms: Some(1_795_860_000_000),
                    cutoff_at_ms: None,
                    clear_cutoff: true,
                }),
            ),
            "0b030272310000 01fd00da314344030000 0001",
        ),
        (
            reply(
                "pong",
                7,
                Reply::Pong {
                    server_time_ms: 1_795_856_400_000,
                },
            ),
            "000700fd00fdc342440300 00",
        ),
        (
            reply(
                "token_refreshed",
                2,
                Reply::TokenRefreshed {
                    expires_at_ms: 1_795_860_000_000,
                },
            ),
            "000201fd00da314344030000",
        ),
        (
            reply(
                "race",
                8,
                Reply::Race(RaceView {
                    id: s("r1"),
                    name: s("Tour"),
                    state: RaceStateView::Live,
                    start_at_ms: 1_795_856_400_000,
                    cutoff_at_ms: None,
                    created_at_ms: 1_795_850_000_000,
                    started_at_ms: Some(1_795_856_412_345),
                    finished_at_ms: None,
                    cancelled_at_ms: None,
                    cancel_reason: None,
                    course_points: 2,
                    course_length_m: 1111.95,
                }),
            ),
            "00080202723104546f757201fd00fdc34244030000 00 fd00ad0042440300 00 \
             01fd725dc442440300 00 000000 02 cdcccccccc5f9140",
        ),
        (
            reply("races.empty", 12, Reply::Races(Vec::new())),
            "000c0300",
        ),
        (
            reply(
                "backup_done",
                13,
                Reply::BackupDone(BackupInfo {
                    bytes: 1_234,
                    records: 3,
                    crc32: 0xdead_beef,
                }),
            ),
            "000d04fbd20403fcefbeadde",
        ),
        (
            error("error", Some(7), ErrorCode::Forbidden, "no"),
            "010107 06 026e6f",
        ),
        (
            error(
                "error.no_id",
                None,
                ErrorCode::RateLimited,
                "slow down: rate limit exceeded",
            ),
            "0100091e736c6f7720646f776e3a2072617465206c696d6974206578636565646564",
        ),
        (
            push(
                "welcome",
                Push::Welcome(Welcome {
                    protocol: 1,
                    server_version: s("0.1.0"),
                    role: Role::Admin,
                    sub: s("ops"),
                    race: None,
                    expires_at_ms: 1_795_860_000_000,
                }),
            ),
            "02000105302e312e3000036f707300fd00da314344030000",
        ),
        (
            push(
                "backup_chunk",
                Push::BackupChunk {
                    request_id: 13,
                    offset: 0,
                    data: b"PELOTONB".to_vec(),
                },
            ),
            "02010d00085045 4c4f544f4e42",
        ),
    ]
    .into_iter()
    .map(|(mut sample, hex)| {
        sample.name = format!("doc.{}", sample.name);
        (sample, hex)
    })
    .collect()
}

/// Every golden sample, in fixture order.
fn samples() -> Vec<Sample> {
    let mut all = request_samples();
    all.extend(reply_samples());
    all.extend(push_samples());
    all.extend(error_samples());
    all.extend(protocol_md_examples().into_iter().map(|(sample, _)| sample));
    all
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("odd number of hex digits: {}", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("bad hex at {i}: {e}"))
        })
        .collect()
}

fn encode(codec: Codec, frame: &Frame) -> Vec<u8> {
    match frame {
        Frame::Client(frame) => codec.encode_client_bytes(frame),
        Frame::Server(frame) => codec.encode_server_bytes(frame),
    }
    .unwrap_or_else(|e| panic!("{codec:?} cannot encode {frame:?}: {e}"))
}

fn decode(codec: Codec, like: &Frame, bytes: &[u8]) -> Result<Frame, String> {
    match like {
        Frame::Client(_) => codec
            .decode_client(bytes)
            .map(|f| Frame::Client(Box::new(f)))
            .map_err(|e| format!("{e:?}")),
        Frame::Server(_) => codec
            .decode_server(bytes)
            .map(|f| Frame::Server(Box::new(f))),
    }
}

/// The fixture's encoding names and the codec each stands for.
const CODECS: [(&str, Codec); 2] = [("bin", Codec::Binary), ("json", Codec::Json)];

/// A payload as the fixture writes it.
fn render(codec: Codec, bytes: &[u8]) -> String {
    match codec {
        Codec::Binary => hex(bytes),
        // One line: serde_json escapes every control character inside strings.
        Codec::Json => String::from_utf8(bytes.to_vec()).expect("serde_json writes UTF-8"),
    }
}

/// A fixture payload back to frame bytes.
fn parse_payload(codec: Codec, payload: &str) -> Result<Vec<u8>, String> {
    match codec {
        Codec::Binary => unhex(payload),
        Codec::Json => Ok(payload.as_bytes().to_vec()),
    }
}

/// Every fixture line today's code produces, in order: `(sample, encoding, payload)`.
fn current_lines() -> Vec<(String, String, String)> {
    let mut lines = Vec::new();
    for sample in samples() {
        for (encoding, codec) in CODECS {
            lines.push((
                sample.name.clone(),
                encoding.to_string(),
                render(codec, &encode(codec, &sample.frame)),
            ));
        }
    }
    for (name, code) in CLOSE_CODES {
        lines.push((format!("close_code.{name}"), s("u16"), code.to_string()));
    }
    for codec in [Codec::Binary, Codec::Json] {
        lines.push((
            format!("subprotocol.{codec:?}").to_lowercase(),
            s("name"),
            s(codec.subprotocol()),
        ));
    }
    lines.push((
        s("subprotocol.const.BINARY_SUBPROTOCOL"),
        s("name"),
        s(BINARY_SUBPROTOCOL),
    ));
    lines.push((
        s("subprotocol.const.JSON_SUBPROTOCOL"),
        s("name"),
        s(JSON_SUBPROTOCOL),
    ));
    lines.push((
        s("protocol_version"),
        s("u32"),
        PROTOCOL_VERSION.to_string(),
    ));
    lines
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

/// The fixture as `(sample, encoding) -> payload`; duplicate keys and malformed lines are
/// errors.
fn read_fixture() -> Result<BTreeMap<(String, String), String>, String> {
    let path = fixture_path();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the golden fixture {}: {e}; to create it from today's code run \
             `{BLESS_ENV}=1 cargo test --test wire_golden` (see the module doc)",
            path.display()
        )
    })?;
    let mut map = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(name), Some(encoding), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{FIXTURE}:{}: malformed line `{line}`", number + 1));
        };
        let key = (name.to_string(), encoding.to_string());
        if map.insert(key, payload.to_string()).is_some() {
            return Err(format!(
                "{FIXTURE}:{}: duplicate sample `{name}` encoding `{encoding}`",
                number + 1
            ));
        }
    }
    Ok(map)
}

/// Compares (or, with `PELOTON_BLESS_GOLDEN=1`, rewrites) the fixture, then proves the
/// fixture's bytes decode to each sample and re-encode to themselves. One test, so the round
/// trip always reads the fixture this run wrote when blessing.
#[test]
fn golden_bytes_match_the_fixture_and_round_trip() {
    let lines = current_lines();
    if std::env::var(BLESS_ENV).as_deref() == Ok("1") {
        let mut text = String::from(FIXTURE_HEADER);
        for (name, encoding, payload) in &lines {
            text.push_str(&format!("{name} {encoding} {payload}\n"));
        }
        let path = fixture_path();
        std::fs::create_dir_all(path.parent().expect("the fixture has a folder"))
            .expect("create the fixture folder");
        std::fs::write(&path, text).expect("write the fixture");
        // Straight to stderr: the test harness would swallow println! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "{BLESS_ENV}=1: wrote {} golden lines to {}; review its diff before committing",
            lines.len(),
            path.display()
        );
    } else {
        let fixture = read_fixture().unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (name, encoding, actual) in &lines {
            let key = (name.clone(), encoding.clone());
            match fixture.get(&key) {
                None => problems.push(format!(
                    "sample `{name}` encoding `{encoding}`: missing from {FIXTURE}\n  actual:   {actual}"
                )),
                Some(expected) if expected != actual => problems.push(format!(
                    "sample `{name}` encoding `{encoding}`: the wire changed\n  expected: {expected}\n  actual:   {actual}"
                )),
                Some(_) => {}
            }
            seen.insert(key);
        }
        for (name, encoding) in fixture.keys().filter(|k| !seen.contains(*k)) {
            problems.push(format!(
                "sample `{name}` encoding `{encoding}`: in {FIXTURE} but no longer produced"
            ));
        }
        assert!(
            problems.is_empty(),
            "{} golden wire line(s) differ from today's code. If this is a deliberate \
             protocol change, update PROTOCOL.md (and the version) and re-bless with \
             {BLESS_ENV}=1 (see tests/wire_golden.rs):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    // The fixture's bytes, decoded by the real decoders, are the samples, and re-encode to
    // exactly the same bytes.
    let fixture = read_fixture().unwrap_or_else(|e| panic!("{e}"));
    let mut checked = 0;
    for sample in samples() {
        for (encoding, codec) in CODECS {
            let key = (sample.name.clone(), encoding.to_string());
            let payload = fixture.get(&key).unwrap_or_else(|| {
                panic!("sample `{}` encoding `{encoding}` missing", sample.name)
            });
            let bytes = parse_payload(codec, payload)
                .unwrap_or_else(|e| panic!("sample `{}` encoding `{encoding}`: {e}", sample.name));
            let decoded = decode(codec, &sample.frame, &bytes).unwrap_or_else(|e| {
                panic!(
                    "sample `{}` encoding `{encoding}`: the fixture does not decode: {e}",
                    sample.name
                )
            });
            assert_eq!(
                decoded, sample.frame,
                "sample `{}` encoding `{encoding}`: the fixture decodes to another value",
                sample.name
            );
            assert_eq!(
                render(codec, &encode(codec, &decoded)),
                *payload,
                "sample `{}` encoding `{encoding}`: decoded fixture re-encodes differently",
                sample.name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, samples().len() * CODECS.len());
}

/// The bytes PROTOCOL.md §5.7 spells out are what the codec writes today (spaces in the
/// transcribed hex are only for reading).
#[test]
fn protocol_md_worked_examples_are_what_the_codec_writes() {
    for (sample, documented) in protocol_md_examples() {
        let documented: String = documented.split_whitespace().collect();
        let actual = hex(&encode(Codec::Binary, &sample.frame));
        assert_eq!(
            actual, documented,
            "sample `{}`: PROTOCOL.md §5.7 says {documented}, the codec writes {actual}",
            sample.name
        );
    }
}

/// JSON that clients already send, as PROTOCOL.md §6.3 shows it, keeps decoding: in
/// particular the forms that leave out optional fields (`reason`, every `race_update` field
/// but `id`), which the encoder never writes and so the fixture alone does not fix.
#[test]
fn protocol_md_json_requests_still_decode() {
    let race = "0193a5c1f2e04b7c9d2a";
    let documented = [
        r#"{"id":7,"request":"ping"}"#,
        r#"{"id":2,"request":{"refresh_token":{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJvcHMi..."}}}"#,
        r#"{"id":9,"request":{"race_create":{"name":"Tour","course_gpx":"<?xml version=\"1.0\"?><gpx version=\"1.1\" creator=\"x\" xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><trkseg><trkpt lat=\"46.0\" lon=\"15.0\"></trkpt><trkpt lat=\"46.01\" lon=\"15.0\"></trkpt></trkseg></trk></gpx>","start_at_ms":1796115600000,"cutoff_at_ms":null}}}"#,
        r#"{"id":10,"request":{"race_update":{"id":"0193a5c1f2e04b7c9d2a","name":"Tour of the Hills","course_gpx":null,"start_at_ms":1796119200000,"cutoff_at_ms":null,"clear_cutoff":false}}}"#,
        r#"{"id":12,"request":"race_list"}"#,
        r#"{"id":8,"request":{"race_get":{"id":"0193a5c1f2e04b7c9d2a"}}}"#,
        r#"{"id":13,"request":{"race_start":{"id":"0193a5c1f2e04b7c9d2a"}}}"#,
        r#"{"id":14,"request":{"race_finish":{"id":"0193a5c1f2e04b7c9d2a"}}}"#,
        r#"{"id":15,"request":{"race_cancel":{"id":"0193a5c1f2e04b7c9d2a","reason":"storm"}}}"#,
        r#"{"id":17,"request":"backup"}"#,
        r#"{"id":18,"request":{"racer_register":{"race_id":"0193a5c1f2e04b7c9d2a","racers":[{"bib":7,"name":"Ana Novak","team":"Celje","email":"ana@example.si"},{"bib":8,"name":"Bor Kralj","team":null,"email":null}]}}}"#,
        r#"{"id":19,"request":{"racer_list":{"race_id":"0193a5c1f2e04b7c9d2a"}}}"#,
        r#"{"id":20,"request":{"fixes":{"fixes":[{"at_ms":1796115601000,"lat_e7":462309000,"lon_e7":152604000,"accuracy_dm":50,"speed_cmps":830,"elevation_dm":null}]}}}"#,
        r#"{"id":21,"request":{"race_standings":{"race_id":"0193a5c1f2e04b7c9d2a"}}}"#,
        r#"{"id":22,"request":{"race_subscribe":{"race_id":"0193a5c1f2e04b7c9d2a","since_seq":1796115600000412}}}"#,
        r#"{"id":23,"request":{"race_replay":{"race_id":"0193a5c1f2e04b7c9d2a","speed":60.0,"from_ms":null}}}"#,
        r#"{"id":24,"request":{"race_share":{"race_id":"0193a5c1f2e04b7c9d2a","ttl_secs":21600}}}"#,
        r#"{"id":25,"request":{"race_disqualify":{"race_id":"0193a5c1f2e04b7c9d2a","bib":7,"reason":"confirmed cut at the bridge, km 12"}}}"#,
        r#"{"id":26,"request":{"race_reinstate":{"race_id":"0193a5c1f2e04b7c9d2a","bib":7}}}"#,
    ];
    for text in documented {
        let frame = Codec::Json
            .decode_client(text.as_bytes())
            .unwrap_or_else(|e| {
                panic!("PROTOCOL.md §6.3 example no longer decodes: {text}: {e:?}")
            });
        // Everything written out in full re-encodes to the same text.
        let again = Codec::Json.encode_client_bytes(&frame).expect("encode");
        assert_eq!(String::from_utf8(again).expect("utf-8"), text);
    }
    let omitted = [
        (
            r#"{"id":11,"request":{"race_update":{"id":"0193a5c1f2e04b7c9d2a","clear_cutoff":true}}}"#,
            ClientFrame {
                id: 11,
                request: Request::RaceUpdate(RaceUpdate {
                    id: s(race),
                    name: None,
                    course_gpx: None,
                    start_at_ms: None,
                    cutoff_at_ms: None,
                    clear_cutoff: true,
                }),
            },
        ),
        (
            r#"{"id":11,"request":{"race_update":{"id":"0193a5c1f2e04b7c9d2a"}}}"#,
            ClientFrame {
                id: 11,
                request: Request::RaceUpdate(RaceUpdate {
                    id: s(race),
                    name: None,
                    course_gpx: None,
                    start_at_ms: None,
                    cutoff_at_ms: None,
                    clear_cutoff: false,
                }),
            },
        ),
        (
            r#"{"id":16,"request":{"race_cancel":{"id":"0193a5c1f2e04b7c9d2a"}}}"#,
            ClientFrame {
                id: 16,
                request: Request::RaceCancel {
                    id: s(race),
                    reason: None,
                },
            },
        ),
    ];
    for (text, expected) in omitted {
        let frame = Codec::Json
            .decode_client(text.as_bytes())
            .unwrap_or_else(|e| {
                panic!("PROTOCOL.md §6.3 example no longer decodes: {text}: {e:?}")
            });
        assert_eq!(frame, expected, "{text}");
    }
}

/// Every variant of every wire enum has at least one golden sample: adding a variant fails
/// to compile until it is named in the tables above, then fails here until it has a sample.
#[test]
fn every_variant_has_a_golden_sample() {
    let mut requests = BTreeSet::new();
    let mut replies = BTreeSet::new();
    let mut pushes = BTreeSet::new();
    let mut server_frames = BTreeSet::new();
    let mut error_codes = BTreeSet::new();
    let mut roles = BTreeSet::new();
    let mut race_states = BTreeSet::new();
    let mut result_statuses = BTreeSet::new();
    let mut import_batches = BTreeSet::new();
    for sample in samples() {
        match &sample.frame {
            Frame::Client(frame) => {
                requests.insert(request_variant(&frame.request));
                if let Request::PatrolImport(batch) = &frame.request {
                    import_batches.insert(import_batch_variant(batch));
                }
            }
            Frame::Server(frame) => {
                server_frames.insert(server_frame_variant(frame));
                match frame.as_ref() {
                    ServerFrame::Reply { reply, .. } => {
                        replies.insert(reply_variant(reply));
                        let views: Vec<&RaceView> = match reply {
                            Reply::Race(view) => vec![view],
                            Reply::Races(views) => views.iter().collect(),
                            Reply::Subscribed(snapshot) => vec![&snapshot.race],
                            _ => Vec::new(),
                        };
                        race_states.extend(views.iter().map(|v| race_state_name(v.state)));
                        if let Reply::Results { rows, .. } = reply {
                            result_statuses
                                .extend(rows.iter().map(|r| result_status_name(r.status)));
                        }
                    }
                    ServerFrame::Error { error, .. } => {
                        error_codes.insert(error_code_name(error.code));
                    }
                    ServerFrame::Push(push) => {
                        pushes.insert(push_variant(push));
                        if let Push::Welcome(welcome) = push {
                            roles.insert(role_name(welcome.role));
                        }
                    }
                }
            }
        }
    }
    let names = |values: Vec<&'static str>| values.into_iter().collect::<BTreeSet<_>>();
    let expect = [
        ("Request", names(REQUEST_VARIANTS.to_vec()), requests),
        ("Reply", names(REPLY_VARIANTS.to_vec()), replies),
        ("Push", names(PUSH_VARIANTS.to_vec()), pushes),
        (
            "ServerFrame",
            names(SERVER_FRAME_VARIANTS.to_vec()),
            server_frames,
        ),
        (
            "ErrorCode",
            names(
                ALL_ERROR_CODES
                    .iter()
                    .map(|&c| error_code_name(c))
                    .collect(),
            ),
            error_codes,
        ),
        (
            "Role",
            names(ALL_ROLES.iter().map(|&r| role_name(r)).collect()),
            roles,
        ),
        (
            "RaceStateView",
            names(
                ALL_RACE_STATES
                    .iter()
                    .map(|&r| race_state_name(r))
                    .collect(),
            ),
            race_states,
        ),
        (
            "ResultStatusView",
            names(
                ALL_RESULT_STATUSES
                    .iter()
                    .map(|&r| result_status_name(r))
                    .collect(),
            ),
            result_statuses,
        ),
        (
            "ImportBatch",
            names(IMPORT_BATCH_VARIANTS.to_vec()),
            import_batches,
        ),
    ];
    for (type_name, all, covered) in expect {
        let missing: Vec<_> = all.difference(&covered).collect();
        assert!(
            missing.is_empty(),
            "{type_name} variants without a golden sample: {missing:?}"
        );
    }
    // The sample names are the fixture's keys.
    let mut names_seen = BTreeSet::new();
    for sample in samples() {
        assert!(
            !sample.name.contains(' '),
            "sample name `{}` has a space",
            sample.name
        );
        assert!(
            names_seen.insert(sample.name.clone()),
            "duplicate sample name `{}`",
            sample.name
        );
    }
}

/// The tables above name variants as the crate does (its metrics names, which are also the
/// JSON tags) and list them in tag order, so the fixture's names say what each line is.
#[test]
fn variant_tables_agree_with_the_crate() {
    assert_eq!(REQUEST_VARIANTS, Request::TYPES.as_slice());
    for sample in samples() {
        match &sample.frame {
            Frame::Client(frame) => {
                assert_eq!(request_variant(&frame.request), frame.request.type_name());
            }
            Frame::Server(frame) => match frame.as_ref() {
                ServerFrame::Reply { reply, .. } => {
                    assert_eq!(reply_variant(reply), reply.type_name());
                }
                ServerFrame::Push(push) => assert_eq!(push_variant(push), push.type_name()),
                ServerFrame::Error { error, .. } => {
                    assert_eq!(error_code_name(error.code), error.code.as_str());
                    let json = render(Codec::Json, &encode(Codec::Json, &sample.frame));
                    assert!(
                        json.contains(&format!("\"code\":\"{}\"", error.code.as_str())),
                        "{json}"
                    );
                }
            },
        }
    }
    for role in ALL_ROLES {
        assert_eq!(role_name(*role), role.as_str());
    }
}
