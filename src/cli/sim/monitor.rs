//! The live monitor of a `sim race` run: polls the race's standings on a race-scoped
//! spectator socket of its own, prints a progress line, and decides when the run is over (every
//! racer expected to finish has) or has failed (a racer's fatal error, the race closed, the
//! rides ended without those finishes, the timeout).
//!
//! How it fits: [`super::race`] runs it while the racer tasks ([`super::racer`]) ride; it reads
//! their counters and clock from [`super::shared::Shared`] and returns the finished bibs for
//! the summary.

use super::racer::RacerEnd;
use super::shared::{Counters, Shared};
use super::text::{clock, state_name};
use crate::cli::CliError;
use crate::net::client::{Client, ClientError};
use crate::net::codec::Codec;
use crate::net::protocol::{RaceStateView, Reply, Request};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the standings are asked for.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Once every racer has sent its whole ride, how long to wait for the standings to show them
/// all finished before calling it a failure.
const SETTLE: Duration = Duration::from_secs(10);
/// Consecutive failed standings polls (lost connection) before the run fails.
const ADMIN_FAILURES: u32 = 10;

/// What the monitor needs to know about the run.
#[derive(Debug, Clone)]
pub(super) struct RunInfo {
    /// First simulated bib.
    pub(super) first_bib: u32,
    /// Simulated racers.
    pub(super) racers: u32,
    /// Per racer (bib minus `first_bib`), whether the run waits for it to finish.
    pub(super) expected: Vec<bool>,
    /// `--timeout`, for the message.
    pub(super) timeout: Duration,
    /// When the run started.
    pub(super) started: Instant,
}

impl RunInfo {
    /// Whether `bib` is one of ours (a race may have other racers too).
    fn ours(&self, bib: u32) -> bool {
        bib >= self.first_bib && u64::from(bib) < u64::from(self.first_bib) + u64::from(self.racers)
    }

    /// Whether the run waits for `bib` to finish (a bib with no plan, as in tests, is).
    fn expects(&self, bib: u32) -> bool {
        self.ours(bib)
            && bib
                .checked_sub(self.first_bib)
                .and_then(|i| self.expected.get(i as usize))
                .is_none_or(|e| *e)
    }

    /// How many racers the run waits for.
    pub(super) fn expected_count(&self) -> u32 {
        let n = (self.first_bib..self.first_bib.saturating_add(self.racers))
            .filter(|b| self.expects(*b))
            .count();
        count(n)
    }

    /// How many of `finished` the run waited for.
    pub(super) fn expected_finished(&self, finished: &[u32]) -> u32 {
        count(finished.iter().filter(|b| self.expects(**b)).count())
    }
}

/// A count for the summary.
pub(super) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The socket the monitor polls standings on, connected on first use and again if it drops.
pub(super) struct StandingsLink {
    /// `ws://HOST:PORT`.
    pub(super) server: String,
    /// The monitor's own race-scoped spectator token.
    pub(super) token: String,
    /// Race id.
    pub(super) race: String,
    /// The socket, when connected.
    pub(super) client: Option<Client>,
    /// Consecutive failed polls.
    pub(super) failures: u32,
}

impl StandingsLink {
    /// Bibs of the simulated racers finished per the standings; `None` when this poll failed
    /// but the run can go on.
    async fn finished(&mut self, info: &RunInfo) -> Result<Option<Vec<u32>>, CliError> {
        let client = match self.client.take() {
            Some(client) => Ok(client),
            None => Client::connect(&self.server, &self.token, Codec::Binary).await,
        };
        let result = match client {
            Ok(mut client) => {
                let reply = client
                    .request(Request::RaceStandings {
                        race_id: self.race.clone(),
                    })
                    .await;
                if reply.is_ok() {
                    self.client = Some(client);
                }
                reply
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(Reply::Standings(rows)) => {
                self.failures = 0;
                Ok(Some(
                    rows.iter()
                        .filter(|r| info.ours(r.bib) && r.finished_at_ms.is_some())
                        .map(|r| r.bib)
                        .collect(),
                ))
            }
            Ok(other) => Err(CliError::unexpected(&other)),
            Err(e @ ClientError::Server(_)) => Err(CliError::Failed(format!(
                "race {}: standings refused: {e}",
                self.race
            ))),
            Err(e) => {
                self.failures += 1;
                if self.failures >= ADMIN_FAILURES {
                    return Err(CliError::Failed(format!(
                        "lost the connection to {}: {e}",
                        self.server
                    )));
                }
                Ok(None)
            }
        }
    }

    /// The race's state now, for a failure message.
    async fn state(&mut self) -> Option<RaceStateView> {
        let mut client = self.client.take()?;
        let reply = client
            .request(Request::RaceGet {
                id: self.race.clone(),
            })
            .await;
        self.client = Some(client);
        match reply {
            Ok(Reply::Race(race)) => Some(race.state),
            _ => None,
        }
    }

    /// Closes the socket politely.
    pub(super) async fn close(&mut self) {
        if let Some(client) = self.client.take() {
            client.close().await;
        }
    }
}

/// Waits until every simulated racer expected to finish has finished, printing progress, and
/// returns the bibs finished by then; fails on a racer's fatal error, when the race closes or
/// the rides end without those finished, or at the timeout. With no racer expected to finish
/// (all abandon, say), it waits for every ride to end instead.
pub(super) async fn monitor(
    link: &mut StandingsLink,
    tasks: &mut JoinSet<Result<RacerEnd, CliError>>,
    shared: &Shared,
    info: &RunInfo,
) -> Result<Vec<u32>, CliError> {
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let expected = info.expected_count();
    let mut finished: Vec<u32> = Vec::new();
    let mut race_closed = false;
    let mut rode_out_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(shared.deadline.into()) => {
                return Err(CliError::Failed(format!(
                    "timed out after {}: {} of {expected} simulated racers expected to finish \
                     finished",
                    humantime::format_duration(info.timeout),
                    info.expected_finished(&finished),
                )));
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => match joined {
                Ok(Ok(RacerEnd::RaceClosed)) => race_closed = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(CliError::Failed(format!("a racer task failed: {e}")));
                }
            },
            _ = poll.tick() => {
                if let Some(bibs) = link.finished(info).await? {
                    finished = bibs;
                }
                let done = info.expected_finished(&finished);
                if done >= expected && (expected > 0 || tasks.is_empty()) {
                    return Ok(finished);
                }
                let now = Instant::now();
                if now >= next_progress {
                    next_progress = now + PROGRESS_EVERY;
                    eprintln!("{}", progress(shared, info, done, expected));
                }
                // A racer saw the race stop taking fixes, and the standings (which were final
                // by then) do not have everyone expected finished.
                if race_closed {
                    let state = link.state().await.map_or("closed", state_name);
                    return Err(CliError::Failed(format!(
                        "race {} is {state} and takes no more fixes: {done} of {expected} \
                         simulated racers expected to finish finished",
                        link.race
                    )));
                }
                if tasks.is_empty() {
                    let since = *rode_out_at.get_or_insert(now);
                    if now.duration_since(since) >= SETTLE {
                        return Err(CliError::Failed(format!(
                            "every simulated racer sent its whole ride, but only {done} of \
                             {expected} expected to finish finished in race {}",
                            link.race
                        )));
                    }
                }
            }
        }
    }
}

/// One progress line.
fn progress(shared: &Shared, info: &RunInfo, finished: u32, expected: u32) -> String {
    let c = &shared.counters;
    let race_clock = Instant::now()
        .checked_duration_since(shared.gun)
        .map_or(0.0, |d| d.as_secs_f64() * shared.speedup);
    format!(
        "sim: {} elapsed, race clock {} | {}/{} connected | fixes {} sent, {} accepted, {} \
         ignored | {}/{} finished",
        clock(info.started.elapsed().as_secs_f64()),
        clock(race_clock),
        Counters::get(&c.connected),
        info.racers,
        Counters::get(&c.fixes_sent),
        Counters::get(&c.accepted),
        Counters::get(&c.ignored),
        finished,
        expected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bib_ranges_read_well() {
        let info = RunInfo {
            first_bib: 10,
            racers: 5,
            expected: vec![true, false, true, true, false],
            timeout: Duration::from_secs(1),
            started: Instant::now(),
        };
        assert!(!info.ours(9) && info.ours(10) && info.ours(14) && !info.ours(15));
        assert!(info.expects(10) && !info.expects(11) && !info.expects(15));
        assert_eq!(info.expected_count(), 3);
        assert_eq!(info.expected_finished(&[10, 11, 12, 99]), 2);
    }
}
