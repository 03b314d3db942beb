//! Domain events other parts of the system react to, published on a broadcast channel so
//! that publishers never know their subscribers (mail jobs will subscribe to these).

use crate::ids::RaceId;
use crate::time::UnixMillis;

/// Something that happened in one domain that another may care about.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// A race finished (by an admin, because every racer finished, or at its cut-off); its
    /// results are final.
    RaceFinished {
        /// The race.
        race: RaceId,
        /// When it finished.
        at_ms: UnixMillis,
    },
}

/// How many events a slow subscriber may fall behind before it misses some.
pub const CHANNEL_CAPACITY: usize = 1024;
