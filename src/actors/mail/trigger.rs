//! Mails that other domains' events cause: when a race finishes, each racer with an address
//! gets their result.
//!
//! The envelope is keyed by (`race-results.<race>`, bib), so the jobs' ids and Message-IDs
//! are the same however often the event is handled (a retried finish, a restart): a racer
//! never gets two different result mails.

use super::domain::{EnvelopeMessage, MailDomain, MailRequest};
use super::message::MailMessage;
use crate::actors::events::DomainEvent;
use crate::actors::race::results::ResultRow;
use crate::actors::race::RaceDomain;
use crate::ids::RaceId;
use crate::time::{format_rfc3339, UnixMillis};
use tokio::sync::broadcast::error::RecvError;

/// Listens to the race domain's events until the channel closes; runs as its own task.
///
/// First it catches up: a race that finished shortly before a crash may never have had its
/// event handled (events are not journaled, the race's finish is). So every race that
/// finished within `catch_up` of now gets its results mails submitted again; the jobs' ids
/// are derived from the race and bib, so one already mailed is not mailed twice. Listening
/// starts before the catch-up so no finish in between is missed.
pub async fn race_results(mail: MailDomain, races: RaceDomain, catch_up: std::time::Duration) {
    let mut events = races.domain_events();
    let since = crate::time::now_ms() - i64::try_from(catch_up.as_millis()).unwrap_or(i64::MAX);
    for race in races.list() {
        let Some(at_ms) = race.finished_at_ms.filter(|t| *t >= since) else {
            continue;
        };
        if race.status != crate::actors::race::state::RaceStatus::Finished {
            continue;
        }
        if let Err(e) = results_mails(&mail, &races, &race.id, at_ms).await {
            tracing::error!(race = %race.id, "results mails not submitted after restart: {e}");
        }
    }
    loop {
        match events.recv().await {
            Ok(DomainEvent::RaceFinished { race, at_ms }) => {
                if let Err(e) = results_mails(&mail, &races, &race, at_ms).await {
                    tracing::error!(%race, "results mails not submitted: {e}");
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "mail missed race events (the channel overflowed)");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// One results job per racer with an address.
pub async fn results_mails(
    mail: &MailDomain,
    races: &RaceDomain,
    race: &RaceId,
    finished_at_ms: UnixMillis,
) -> Result<usize, crate::error::Rejection> {
    let summary = races.get(race)?;
    let roster = races.roster(race).await?;
    let rows = races.results(race).await?;
    let mut sent = 0;
    for racer in roster {
        let Some(email) = racer.email else {
            continue;
        };
        let row = rows.iter().find(|r| r.bib == racer.bib);
        let request = MailRequest {
            correlation: format!("race-results.{race}"),
            sequence: u64::from(racer.bib),
            sent_at_ms: finished_at_ms,
            messages: vec![EnvelopeMessage {
                message: MailMessage {
                    to: email,
                    subject: format!(
                        "Your result: {}",
                        summary.name.chars().take(150).collect::<String>()
                    ),
                    body: body(&racer.name, &summary.name, row, finished_at_ms),
                },
                contact: None,
            }],
        };
        match mail.submit(request).await {
            Ok(_) => sent += 1,
            Err(e) => tracing::warn!(%race, bib = racer.bib, "results mail refused: {e}"),
        }
    }
    Ok(sent)
}

/// The plain-text result.
fn body(name: &str, race: &str, row: Option<&ResultRow>, finished_at_ms: UnixMillis) -> String {
    let result = match row {
        Some(r) => match r.time_ms {
            Some(t) => format!(
                "rank {} in {}:{:02}:{:02} ({:.1} km)",
                r.rank,
                t / 3_600_000,
                (t / 60_000) % 60,
                (t / 1_000) % 60,
                r.distance_m / 1000.0
            ),
            None => format!("{:?} after {:.1} km", r.status, r.distance_m / 1000.0).to_lowercase(),
        },
        None => "no result".to_owned(),
    };
    format!(
        "Hello {name},\n\n{race} finished at {}.\nYour result: {result}.\n\nThank you for racing.\n",
        format_rfc3339(finished_at_ms)
    )
}
