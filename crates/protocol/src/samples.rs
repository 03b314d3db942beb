//! One request of every type: the seeds the fuzzer's decoder targets mutate, and the
//! samples the codec's own round-trip tests use. Kept beside the message model so a new
//! request type gets its sample where it is declared.

use crate::protocol::*;

/// One request of every type, in tag order: the seeds the decoder targets mutate, and the
/// samples the codec's own round-trip tests use.
pub fn sample_requests() -> Vec<Request> {
    vec![
        Request::Ping,
        Request::RefreshToken { token: "t".into() },
        Request::RaceCreate(crate::protocol::RaceCreate {
            name: "n".into(),
            course_gpx: "<gpx/>".into(),
            start_at_ms: 1,
            cutoff_at_ms: Some(2),
        }),
        Request::RaceUpdate(crate::protocol::RaceUpdate {
            id: "r".into(),
            name: None,
            course_gpx: None,
            start_at_ms: Some(5),
            cutoff_at_ms: None,
            clear_cutoff: true,
        }),
        Request::RaceList,
        Request::RaceGet { id: "r".into() },
        Request::RaceStart { id: "r".into() },
        Request::RaceFinish { id: "r".into() },
        Request::RaceCancel {
            id: "r".into(),
            reason: None,
        },
        Request::Backup,
        Request::RacerRegister {
            race_id: "r".into(),
            racers: vec![crate::protocol::RacerView {
                bib: 7,
                name: "Ana".into(),
                team: None,
                email: None,
            }],
        },
        Request::RacerList {
            race_id: "r".into(),
        },
        Request::Fixes {
            fixes: vec![crate::protocol::WireFix {
                at_ms: 1_796_115_600_000,
                lat_e7: 460_569_000,
                lon_e7: 152_604_000,
                accuracy_dm: 50,
                speed_cmps: Some(830),
                elevation_dm: None,
            }],
        },
        Request::RaceStandings {
            race_id: "r".into(),
        },
        Request::RaceSubscribe {
            race_id: "r".into(),
            since_seq: Some(3),
        },
        Request::RaceResults {
            race_id: "r".into(),
        },
        Request::RaceReplay {
            race_id: "r".into(),
            speed: 60.0,
            from_ms: Some(1_796_115_600_000),
        },
        Request::RaceShare {
            race_id: "r".into(),
            ttl_secs: 3600,
        },
        Request::MailSubmit(crate::protocol::MailEnvelope {
            correlation_id: "order-1".into(),
            sequence: 2,
            sent_at_ms: 1_796_115_600_000,
            messages: vec![crate::protocol::MailMessageView {
                to: "ana@example.org".into(),
                subject: "Hi".into(),
                body: "Body".into(),
                contact: Some("ana".into()),
            }],
        }),
        Request::MailStatus { id: "j".into() },
        Request::MailList {
            state: Some("dead".into()),
            limit: 10,
        },
        Request::MailFailed { limit: 10 },
        Request::MailRetry { id: "j".into() },
        Request::MailRetryAllDead,
        Request::PatrolProfile {
            display_name: "Ana".into(),
            email: Some("ana@example.org".into()),
        },
        Request::DutyStart { minutes: Some(30) },
        Request::DutyEnd,
        Request::PatrolPosition {
            lat_e7: 488_566_000,
            lon_e7: 23_522_000,
            accuracy_m: Some(8.0),
        },
        Request::OfficersNearest { count: 5 },
        Request::ConnectRequest {
            officer_id: "o-17".into(),
        },
        Request::ConnectAnswer {
            request_id: "c1".into(),
            accept: true,
        },
        Request::RewardsBalance,
        Request::RewardsHistory {
            before: Some(10),
            limit: 20,
        },
        Request::OffersList,
        Request::CharitiesList,
        Request::RewardsRedeem {
            request_id: "r1".into(),
            offer_id: "coffee".into(),
        },
        Request::RewardsDonate {
            request_id: "d1".into(),
            charity_id: "red-cross".into(),
            points: 5,
        },
        Request::MessageSend {
            request_id: "m1".into(),
            to: "o-17".into(),
            text: "Thanks!".into(),
        },
        Request::MessageHistory {
            with: "o-17".into(),
            before_seq: None,
            limit: 50,
        },
        Request::PatrolImport(crate::protocol::ImportBatch::Charities(vec![
            crate::protocol::CharityRow {
                id: "red-cross".into(),
                name: "Red Cross".into(),
            },
        ])),
        Request::PatrolReport {
            from: "2026-11-01".into(),
            to: "2026-11-30".into(),
        },
        Request::RaceDisqualify {
            race_id: "r".into(),
            bib: 7,
            reason: "confirmed cut".into(),
        },
        Request::RaceReinstate {
            race_id: "r".into(),
            bib: 7,
        },
        Request::RaceDeviceBind {
            race_id: "r".into(),
            bib: 7,
            device_id: Some("traccar-218604".into()),
        },
        Request::RaceDeviceRevoke {
            race_id: "r".into(),
            bib: 7,
        },
        Request::RaceDevices {
            race_id: "r".into(),
        },
        Request::RacerLink {
            race_id: "r".into(),
            bib: 7,
            ttl_secs: 86_400,
        },
    ]
}
