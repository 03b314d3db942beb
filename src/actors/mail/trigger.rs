//! Mails that other domains' events cause: when a race finishes, each racer with an address
//! gets their result.
//!
//! The envelope is keyed by (`race-results.<race>`, bib), so the jobs' ids and Message-IDs
//! are the same however often the event is handled (a retried finish, a restart): a racer
//! never gets two different result mails.

use super::domain::{EnvelopeMessage, MailDomain, MailRequest};
use super::message::MailMessage;
use crate::actors::events::DomainEvent;
use crate::actors::race::results::{ResultRow, ResultStatus};
use crate::actors::race::RaceDomain;
use crate::ids::RaceId;
use crate::time::{format_rfc3339, UnixMillis};
use tokio::sync::broadcast::error::RecvError;

/// Listens to the race domain's events until the channel closes; runs as its own task.
///
/// First it catches up: a race that finished shortly before a crash may never have had its
/// event handled (events are not journaled, the race's finish is). So every race that
/// finished within `catch_up` of now gets its results mails submitted again, unless the
/// directory's summary shows there is nobody to mail or the mail domain already has the
/// last one (they are submitted in bib order, each durable before the next): only a race
/// whose mails were cut short is woken from its journal for them. The jobs' ids are derived
/// from the race and bib, so one already mailed is not mailed twice. Listening starts before
/// the catch-up so no finish in between is missed.
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
        let Some(last) = race.last_bib_with_email else {
            continue;
        };
        if mail.submitted(&results_correlation(&race.id), u64::from(last)) {
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

/// The correlation id of race `race`'s results mails; the bib is the sequence.
fn results_correlation(race: &RaceId) -> String {
    format!("race-results.{race}")
}

/// One results job per racer with an address, in bib order.
pub async fn results_mails(
    mail: &MailDomain,
    races: &RaceDomain,
    race: &RaceId,
    finished_at_ms: UnixMillis,
) -> Result<usize, crate::error::Rejection> {
    let summary = races.get(race)?;
    let roster = races.roster(race).await?;
    let rows = races.results(race).await?;
    let finishers = rows
        .iter()
        .filter(|r| r.status == ResultStatus::Finished)
        .count();
    let course_km = summary.course_length_m / 1000.0;
    let mut sent = 0;
    for racer in roster {
        let Some(email) = racer.email else {
            continue;
        };
        let row = rows.iter().find(|r| r.bib == racer.bib);
        let request = MailRequest {
            correlation: results_correlation(race),
            sequence: u64::from(racer.bib),
            sent_at_ms: finished_at_ms,
            messages: vec![EnvelopeMessage {
                message: MailMessage {
                    to: email,
                    subject: format!(
                        "Your result: {}",
                        summary.name.chars().take(150).collect::<String>()
                    ),
                    body: body(
                        &racer.name,
                        &summary.name,
                        row,
                        finishers,
                        course_km,
                        finished_at_ms,
                    ),
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

/// The plain-text result mail, written as the organiser would write it: a finisher's place
/// and time; for a racer who did not finish, how far they got; for one we never heard from,
/// that we had no position (and to reply if that is wrong, since a phone that failed is the
/// likelier story than a racer who stayed home); for a disqualified racer, why.
fn body(
    name: &str,
    race: &str,
    row: Option<&ResultRow>,
    finishers: usize,
    course_km: f64,
    finished_at_ms: UnixMillis,
) -> String {
    let result = match row {
        Some(r) => match r.status {
            ResultStatus::Finished => {
                let place = match r.rank {
                    Some(rank) => format!("{} of {finishers}", ordinal(rank)),
                    None => format!("among the {finishers} finishers"),
                };
                match (r.time_ms, r.avg_speed_kmh) {
                    (Some(t), Some(kmh)) => format!(
                        "You finished {place} in {}:{:02}:{:02} ({course_km:.1} km at {kmh:.1} km/h).",
                        t / 3_600_000,
                        (t / 60_000) % 60,
                        (t / 1_000) % 60,
                    ),
                    _ => format!("You finished {place}."),
                }
            }
            ResultStatus::Dnf => format!(
                "You rode {:.1} of {course_km:.1} km before the race closed; you are listed as \
                 did not finish (DNF).",
                r.distance_m / 1000.0
            ),
            ResultStatus::Dns => "We received no position from your phone during the race, so \
                 you are listed as did not start (DNS). If you did ride, reply to this mail and \
                 we will look into it."
                .to_owned(),
            ResultStatus::Dsq => format!(
                "You are listed as disqualified (DSQ): {}. If you think this is wrong, reply \
                 to this mail.",
                r.reason
                    .as_deref()
                    .unwrap_or("the reason was not recorded")
                    .trim_end_matches('.')
            ),
            ResultStatus::Racing => format!(
                "You were still out on the course, {:.1} km in, when the results were taken.",
                r.distance_m / 1000.0
            ),
        },
        None => "We have no result for you in this race. If you rode it, reply to this mail and \
                 we will look into it."
            .to_owned(),
    };
    format!(
        "Hello {name},\n\n{race} finished at {}.\n\n{result}\n\nThank you for racing.\n",
        format_rfc3339(finished_at_ms)
    )
}

/// 1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, …, 21st, 22nd.
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rank: Option<u32>, status: ResultStatus, reason: Option<&str>) -> ResultRow {
        ResultRow {
            rank,
            bib: 7,
            name: "Ana".into(),
            team: None,
            time_ms: (status == ResultStatus::Finished).then_some(9_067_000),
            avg_speed_kmh: (status == ResultStatus::Finished).then_some(31.8),
            distance_m: 42_300.0,
            splits_ms: Vec::new(),
            status,
            reason: reason.map(str::to_owned),
            off_course: Vec::new(),
            cuts: Vec::new(),
        }
    }

    fn mail(row: &ResultRow) -> String {
        body("Ana", "Gran Fondo", Some(row), 57, 80.0, 0)
    }

    #[test]
    fn each_result_reads_as_a_person_would_write_it() {
        let finished = mail(&row(Some(3), ResultStatus::Finished, None));
        assert!(
            finished.contains("You finished 3rd of 57 in 2:31:07 (80.0 km at 31.8 km/h)."),
            "{finished}"
        );
        let dnf = mail(&row(
            None,
            ResultStatus::Dnf,
            Some("did not finish: 42.3 of 80.0 km when the race closed"),
        ));
        assert!(
            dnf.contains(
                "You rode 42.3 of 80.0 km before the race closed; you are listed as did not \
                 finish (DNF)."
            ),
            "{dnf}"
        );
        let mut dns = row(None, ResultStatus::Dns, Some("did not start"));
        dns.distance_m = 0.0;
        let dns = mail(&dns);
        assert!(dns.contains("no position from your phone"), "{dns}");
        assert!(
            dns.contains("did not start (DNS)") && dns.contains("reply"),
            "{dns}"
        );
        assert!(!dns.contains("0.0 km"), "{dns}");
        let dsq = mail(&row(
            None,
            ResultStatus::Dsq,
            Some("missed the mandatory checkpoint CP2."),
        ));
        assert!(
            dsq.contains("disqualified (DSQ): missed the mandatory checkpoint CP2. If"),
            "{dsq}"
        );
        for text in [&finished, &dnf, &dns, &dsq] {
            assert!(
                text.starts_with("Hello Ana,\n\nGran Fondo finished at "),
                "{text}"
            );
            assert!(!text.contains("Dnf") && !text.contains("dns"), "{text}");
        }
    }

    #[test]
    fn ordinals_as_written() {
        let all: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            all,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th", "112th"
            ]
        );
    }
}
