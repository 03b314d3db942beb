//! Which races and bibs a device id is bound to, across every race: how an HTTP fix that
//! carries nothing but a device id finds its racer without asking every race actor.
//!
//! Race actors own the bindings (journaled, `devices` in the domain crate) and keep this
//! index in step: they add their bindings when they start (recovery fills it before the
//! server reports ready) and follow every bind and revoke. It is a lookup table, never the
//! record: a restart rebuilds it from the journals.

use crate::ids::RaceId;
use dashmap::DashMap;

/// Device id -> every (race, bib) it is bound to. One phone usually rides several races
/// with the same id over a season, so an id may stand in several races; at most one of
/// them is live at a time in practice, and the facade refuses a fix when more than one is.
#[derive(Debug, Default)]
pub struct DeviceIndex {
    /// The bindings by id; an entry with no binding left is removed.
    by_id: DashMap<String, Vec<(RaceId, u32)>>,
}

impl DeviceIndex {
    /// Records that `device_id` reports for `bib` in `race` (replacing another bib of the
    /// same race, which the race's rules already refuse).
    pub fn bind(&self, device_id: &str, race: &RaceId, bib: u32) {
        let mut entry = self.by_id.entry(device_id.to_owned()).or_default();
        entry.retain(|(r, _)| r != race);
        entry.push((race.clone(), bib));
    }

    /// Forgets `device_id` in `race`.
    pub fn unbind(&self, device_id: &str, race: &RaceId) {
        let emptied = match self.by_id.get_mut(device_id) {
            Some(mut entry) => {
                entry.retain(|(r, _)| r != race);
                entry.is_empty()
            }
            None => false,
        };
        if emptied {
            self.by_id.remove_if(device_id, |_, races| races.is_empty());
        }
    }

    /// Every (race, bib) `device_id` is bound to.
    pub fn lookup(&self, device_id: &str) -> Vec<(RaceId, u32)> {
        self.by_id
            .get(device_id)
            .map(|entry| entry.value().clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_follows_binds_and_revokes_per_race() {
        let index = DeviceIndex::default();
        let (a, b) = (RaceId::parse("a").unwrap(), RaceId::parse("b").unwrap());
        index.bind("phone", &a, 1);
        index.bind("phone", &b, 7);
        index.bind("phone", &a, 2);
        let mut found = index.lookup("phone");
        found.sort();
        assert_eq!(found, vec![(a.clone(), 2), (b.clone(), 7)]);
        index.unbind("phone", &a);
        assert_eq!(index.lookup("phone"), vec![(b.clone(), 7)]);
        index.unbind("phone", &b);
        assert!(index.lookup("phone").is_empty());
        assert!(index.by_id.is_empty(), "no empty entries are kept");
    }
}
