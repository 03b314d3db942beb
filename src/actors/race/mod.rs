//! The race domain: lifecycle rules ([`state`]), live standings ([`standings`]), the actor that persists and applies them
//! ([`actor`]), the supervisor that recovers and restarts race actors ([`supervisor`]), and
//! the facade the API layer calls ([`domain`]).

pub mod actor;
pub mod device_index;
pub mod domain;
pub mod mirror;
pub mod news;
pub mod relay;
pub mod supervisor;
pub mod watch;

// The race's rules (the domain crate), beside the shell that runs them.
pub use peloton_domain::race::{
    devices, disqualification, feed, pace, replay, residency, results, standings, state,
};

use crate::ids::RaceId;
pub use domain::RaceDomain;
pub use state::{
    Race, RaceCommand, RaceEvent, RaceLimits, RaceState, RaceStatus, RaceSummary, RacerEntry,
};

/// Journal key prefix and metrics label for race actors.
pub const KIND: &str = "race";

/// Journal key prefix of a race's device bindings (`devices/<race>`): journaled beside the
/// race, not in it, since they are credentials.
pub const DEVICES_KIND: &str = "devices";

/// The lease that makes one node the owner of race `id` and its racers in cluster mode:
/// `race.<id>`, its dots written as `=` (a lease key's dots separate tokens, and `=` is not
/// allowed in an id, so the mapping is one to one).
pub fn lease_key(id: &RaceId) -> String {
    format!("race.{}", id.as_str().replace('.', "="))
}

/// The race a lease key names (`None`: not a race's lease).
pub fn race_of_lease(key: &str) -> Option<RaceId> {
    let id = key.strip_prefix("race.")?.replace('=', ".");
    RaceId::parse(&id).ok()
}

/// The lease a journal key is written under: a race's, its devices' and its racers'
/// journals belong to the race (`None`: not a race-domain journal).
pub fn lease_of_actor(actor: &crate::persist::ActorKey) -> Option<String> {
    let (kind, id) = actor.as_str().split_once('/')?;
    let race = match kind {
        KIND | DEVICES_KIND => id,
        crate::actors::racer::KIND => id.rsplit_once('.').map(|(race, _)| race)?,
        _ => return None,
    };
    RaceId::parse(race).ok().map(|race| lease_key(&race))
}

#[cfg(test)]
mod lease_tests {
    use super::*;
    use crate::persist::ActorKey;

    #[test]
    fn every_race_journal_maps_to_its_race_lease() {
        let race = RaceId::parse("r1.a").unwrap();
        let key = lease_key(&race);
        assert_eq!(key, "race.r1=a");
        assert_eq!(race_of_lease(&key), Some(race.clone()));
        for actor in [
            ActorKey::new(KIND, "r1.a"),
            ActorKey::new(DEVICES_KIND, "r1.a"),
            ActorKey::new(crate::actors::racer::KIND, "r1.a.17"),
        ] {
            assert_eq!(lease_of_actor(&actor), Some(key.clone()), "{actor}");
        }
        assert_eq!(lease_of_actor(&ActorKey::new("mail", "j1")), None);
        assert_eq!(race_of_lease("shard.x"), None);
    }
}
