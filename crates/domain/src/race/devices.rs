//! Which tracking app reports for which racer: the device ids of one race.
//!
//! Phone apps that speak established location protocols (Traccar Client and OsmAnd over the
//! OsmAnd protocol, OwnTracks over HTTP) identify themselves with a device id and nothing
//! else, so in Peloton a device id *is* the racer's credential for those protocols. An admin
//! binds one to a bib; the server generates it (unguessable) unless the admin gives one (the
//! id an app already shows), and revokes it when a phone is lost or swapped.
//!
//! The bindings are their own aggregate, journaled beside the race rather than inside it:
//! they are credentials, kept out of the race record that results, replays and backups
//! read, and they change on a different rhythm (the morning of the race, at the desk).
//! Events are appended, never rewritten, so a revoked id stays revoked across restarts.

use super::state::Race;
use crate::aggregate::{Aggregate, Decision};
use crate::error::{ErrorCode, Rejection};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Shortest device id an admin may give: shorter ones are guessed in minutes even behind
/// the per-address rate limit (Traccar Client's own default is six digits, which is why
/// the generated id is the recommended one).
pub const MIN_DEVICE_ID_CHARS: usize = 6;

/// Longest device id: an IMEI is 15 digits, OwnTracks' `user/device` pairs and UUIDs fit.
pub const MAX_DEVICE_ID_CHARS: usize = 64;

/// Characters a generated id is written in: lowercase base32 without padding, easy to
/// read aloud and to type into an app's settings.
const GENERATED_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Characters in a generated id: 16 of 32 symbols is 80 bits, far beyond guessing.
pub const GENERATED_ID_CHARS: usize = 16;

/// Checks a device id that came from outside (an admin, an app): 1..=64 printable ASCII
/// characters without spaces, so it survives query strings, CSV cells and logs unchanged.
pub fn validate_device_id(id: &str) -> Result<(), Rejection> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID_CHARS {
        return Err(Rejection::new(
            ErrorCode::BadRequest,
            format!("a device id has 1 to {MAX_DEVICE_ID_CHARS} characters"),
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::new(
            ErrorCode::BadRequest,
            "a device id is printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// A fresh, unguessable device id from 10 random bytes (the shell draws them).
pub fn generated_device_id(random: [u8; 10]) -> String {
    // 80 bits, 5 bits per character: read the bytes as one big-endian number.
    let mut bits: u128 = 0;
    for byte in random {
        bits = (bits << 8) | u128::from(byte);
    }
    (0..GENERATED_ID_CHARS)
        .rev()
        .map(|i| char::from(GENERATED_ALPHABET[((bits >> (i * 5)) & 31) as usize]))
        .collect()
}

/// One racer's binding as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBinding {
    /// The racer's bib.
    pub bib: u32,
    /// The id the app sends.
    pub device_id: String,
    /// When it was bound, ms since the epoch (the admin's view shows it).
    pub bound_at_ms: UnixMillis,
}

/// The device ids of one race, by bib.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceDevices {
    /// At most one id per bib; an id belongs to at most one bib.
    by_bib: BTreeMap<u32, DeviceBinding>,
}

/// What an admin asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicesCommand {
    /// Binds a device id to a bib, replacing the bib's previous one. `None`: generate one.
    Bind {
        /// The racer.
        bib: u32,
        /// The admin's id, or `None` for a generated one.
        device_id: Option<String>,
    },
    /// Unbinds the bib's device: its id stops being accepted at once.
    Revoke {
        /// The racer.
        bib: u32,
    },
}

/// What happened, journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DevicesEvent {
    /// `device_id` now reports for `bib` (any earlier id of the bib no longer does).
    Bound {
        /// The racer.
        bib: u32,
        /// The id.
        device_id: String,
        /// When.
        at_ms: UnixMillis,
    },
    /// The bib has no device any more.
    Revoked {
        /// The racer.
        bib: u32,
    },
}

/// What a decision reads besides the bindings.
#[derive(Debug, Clone, Copy)]
pub struct DevicesInputs<'a> {
    /// The race: only registered bibs get a device.
    pub race: &'a Race,
    /// The id a `Bind` without one gets (drawn by the shell, so deciding stays pure).
    pub fresh_id: &'a str,
    /// Now, ms since the epoch.
    pub now_ms: UnixMillis,
}

/// A change as the admin sees it: the binding now (none after a revoke) and the id it
/// replaced or removed, so the index of ids can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesChange {
    /// The bib's binding after the change.
    pub binding: Option<DeviceBinding>,
    /// The id the bib had before, if it was another one.
    pub replaced: Option<String>,
}

impl RaceDevices {
    /// The bib's binding, if any.
    pub fn of(&self, bib: u32) -> Option<&DeviceBinding> {
        self.by_bib.get(&bib)
    }

    /// Every binding, by bib.
    pub fn all(&self) -> impl Iterator<Item = &DeviceBinding> {
        self.by_bib.values()
    }

    /// The bib `device_id` reports for, if it is bound in this race.
    pub fn bib_of(&self, device_id: &str) -> Option<u32> {
        self.by_bib
            .values()
            .find(|b| b.device_id == device_id)
            .map(|b| b.bib)
    }
}

impl Aggregate for RaceDevices {
    type Command = DevicesCommand;
    type Event = DevicesEvent;
    type Context<'a> = DevicesInputs<'a>;
    type Outcome = DevicesChange;

    fn decide(
        &self,
        command: DevicesCommand,
        inputs: DevicesInputs<'_>,
    ) -> Result<Decision<DevicesEvent, DevicesChange>, Rejection> {
        let bib = match &command {
            DevicesCommand::Bind { bib, .. } | DevicesCommand::Revoke { bib } => *bib,
        };
        super::state::registered_bib(inputs.race, bib)?;
        let current = self.by_bib.get(&bib);
        match command {
            DevicesCommand::Bind { device_id, .. } => {
                let device_id = match device_id {
                    Some(given) => {
                        validate_device_id(&given)?;
                        if given.len() < MIN_DEVICE_ID_CHARS {
                            return Err(Rejection::new(
                                ErrorCode::BadRequest,
                                format!(
                                    "a device id an admin gives has at least \
                                     {MIN_DEVICE_ID_CHARS} characters; leave it out to get a \
                                     generated one"
                                ),
                            ));
                        }
                        given
                    }
                    None => inputs.fresh_id.to_owned(),
                };
                if let Some(other) = self.bib_of(&device_id).filter(|other| *other != bib) {
                    return Err(Rejection::new(
                        ErrorCode::Conflict,
                        format!("that device id already reports for bib {other} of this race"),
                    ));
                }
                // The same id again is a retry: nothing to write, the same answer.
                if current.is_some_and(|c| c.device_id == device_id) {
                    return Ok(Decision {
                        events: Vec::new(),
                        outcome: DevicesChange {
                            binding: current.cloned(),
                            replaced: None,
                        },
                    });
                }
                let binding = DeviceBinding {
                    bib,
                    device_id: device_id.clone(),
                    bound_at_ms: inputs.now_ms,
                };
                Ok(Decision {
                    events: vec![DevicesEvent::Bound {
                        bib,
                        device_id,
                        at_ms: inputs.now_ms,
                    }],
                    outcome: DevicesChange {
                        binding: Some(binding),
                        replaced: current.map(|c| c.device_id.clone()),
                    },
                })
            }
            DevicesCommand::Revoke { .. } => Ok(Decision {
                events: current
                    .map(|_| DevicesEvent::Revoked { bib })
                    .into_iter()
                    .collect(),
                outcome: DevicesChange {
                    binding: None,
                    replaced: current.map(|c| c.device_id.clone()),
                },
            }),
        }
    }

    fn apply(&mut self, event: &DevicesEvent) {
        match event {
            DevicesEvent::Bound {
                bib,
                device_id,
                at_ms,
            } => {
                self.by_bib.insert(
                    *bib,
                    DeviceBinding {
                        bib: *bib,
                        device_id: device_id.clone(),
                        bound_at_ms: *at_ms,
                    },
                );
            }
            DevicesEvent::Revoked { bib } => {
                self.by_bib.remove(bib);
            }
        }
    }

    fn size_hint(&self) -> usize {
        self.by_bib.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Course;
    use crate::ids::RaceId;
    use crate::race::state::{RaceStatus, RacerEntry};
    use proptest::prelude::*;

    fn race(bibs: &[u32]) -> Race {
        Race {
            id: RaceId::parse("r1").unwrap(),
            name: "Loop".into(),
            course: Course::from_degrees(&[(46.0, 15.0), (46.01, 15.0)], 10).unwrap(),
            start_at_ms: 0,
            cutoff_at_ms: None,
            status: RaceStatus::Scheduled,
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            cancelled_at_ms: None,
            cancel_reason: None,
            roster: bibs
                .iter()
                .map(|bib| {
                    (
                        *bib,
                        RacerEntry {
                            bib: *bib,
                            name: format!("Racer {bib}"),
                            team: None,
                            email: None,
                        },
                    )
                })
                .collect(),
            disqualified: BTreeMap::new(),
        }
    }

    fn run(
        devices: &mut RaceDevices,
        race: &Race,
        command: DevicesCommand,
        fresh: &str,
    ) -> Result<DevicesChange, Rejection> {
        let inputs = DevicesInputs {
            race,
            fresh_id: fresh,
            now_ms: 1_000,
        };
        let decision = devices.decide(command, inputs)?;
        for event in &decision.events {
            devices.apply(event);
        }
        Ok(decision.outcome)
    }

    #[test]
    fn a_bind_without_an_id_gets_the_generated_one_and_a_retry_writes_nothing() {
        let race = race(&[7]);
        let mut devices = RaceDevices::default();
        let bind = DevicesCommand::Bind {
            bib: 7,
            device_id: None,
        };
        let change = run(&mut devices, &race, bind, "abcdefghijklmnop").unwrap();
        assert_eq!(change.binding.unwrap().device_id, "abcdefghijklmnop");
        assert_eq!(devices.bib_of("abcdefghijklmnop"), Some(7));
        let again = DevicesCommand::Bind {
            bib: 7,
            device_id: Some("abcdefghijklmnop".into()),
        };
        let decision = devices
            .decide(
                again,
                DevicesInputs {
                    race: &race,
                    fresh_id: "zzzzzzzzzzzzzzzz",
                    now_ms: 2_000,
                },
            )
            .unwrap();
        assert!(decision.events.is_empty(), "the same id again is a retry");
    }

    #[test]
    fn an_id_reports_for_one_bib_and_a_revoked_id_for_nobody() {
        let race = race(&[1, 2]);
        let mut devices = RaceDevices::default();
        let bind = |bib, id: &str| DevicesCommand::Bind {
            bib,
            device_id: Some(id.into()),
        };
        run(&mut devices, &race, bind(1, "phone-one"), "x").unwrap();
        let clash = run(&mut devices, &race, bind(2, "phone-one"), "x").unwrap_err();
        assert_eq!(clash.code, ErrorCode::Conflict);
        let swap = run(&mut devices, &race, bind(1, "phone-new"), "x").unwrap();
        assert_eq!(swap.replaced.as_deref(), Some("phone-one"));
        assert_eq!(devices.bib_of("phone-one"), None, "the old phone is out");
        let revoked = run(&mut devices, &race, DevicesCommand::Revoke { bib: 1 }, "x").unwrap();
        assert_eq!(revoked.replaced.as_deref(), Some("phone-new"));
        assert_eq!(devices.bib_of("phone-new"), None);
        assert!(devices.of(1).is_none());
    }

    #[test]
    fn unregistered_bibs_short_and_unprintable_ids_are_refused() {
        let race = race(&[1]);
        let mut devices = RaceDevices::default();
        let bind = |bib, id: Option<&str>| DevicesCommand::Bind {
            bib,
            device_id: id.map(str::to_owned),
        };
        let cases = [
            (bind(9, None), ErrorCode::NotFound),
            (bind(1, Some("12345")), ErrorCode::BadRequest),
            (bind(1, Some("has space")), ErrorCode::BadRequest),
            (bind(1, Some("")), ErrorCode::BadRequest),
            (bind(1, Some(&"x".repeat(65))), ErrorCode::BadRequest),
        ];
        for (command, code) in cases {
            assert_eq!(
                run(&mut devices, &race, command.clone(), "fresh")
                    .unwrap_err()
                    .code,
                code,
                "{command:?}"
            );
        }
        assert_eq!(devices, RaceDevices::default(), "a refusal changes nothing");
    }

    #[test]
    fn generated_ids_use_every_bit_and_the_alphabet() {
        assert_eq!(generated_device_id([0; 10]), "aaaaaaaaaaaaaaaa");
        assert_eq!(generated_device_id([0xff; 10]), "7777777777777777");
        let id = generated_device_id([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(id.len(), GENERATED_ID_CHARS);
        validate_device_id(&id).unwrap();
    }

    proptest! {
        /// Replaying the journaled events rebuilds exactly the state the decisions built.
        #[test]
        fn replay_rebuilds_the_bindings(ops in proptest::collection::vec((1u32..4, 0u8..4), 0..40)) {
            let race = race(&[1, 2, 3]);
            let mut devices = RaceDevices::default();
            let mut journal = Vec::new();
            for (bib, op) in ops {
                let command = match op {
                    0 => DevicesCommand::Revoke { bib },
                    1 => DevicesCommand::Bind { bib, device_id: None },
                    n => DevicesCommand::Bind { bib, device_id: Some(format!("device-{n}")) },
                };
                let fresh = format!("fresh-{}", journal.len());
                let inputs = DevicesInputs { race: &race, fresh_id: &fresh, now_ms: 5 };
                if let Ok(decision) = devices.decide(command, inputs) {
                    for event in &decision.events {
                        devices.apply(event);
                    }
                    journal.extend(decision.events);
                }
            }
            let mut replayed = RaceDevices::default();
            for event in &journal {
                replayed.apply(event);
            }
            prop_assert_eq!(&replayed, &devices);
            let ids: Vec<&str> = devices.all().map(|b| b.device_id.as_str()).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(ids.len(), unique.len(), "an id belongs to one bib");
        }
    }
}
