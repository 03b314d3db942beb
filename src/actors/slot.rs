//! Where a domain's running supervisor publishes itself for its facade: the root restarts a
//! failed supervisor (a new incarnation, a new `ActorRef`), so the facade must not keep the
//! first one it saw. Until an incarnation has published itself (recovery still running), the
//! domain answers `unavailable`.

use crate::actors::ask::ask;
use crate::error::{ErrorCode, Rejection};
use ractor::{ActorRef, Message, RpcReplyPort};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The current supervisor of one domain, shared by the facade (reader) and every
/// incarnation of the supervisor (writer); clones share the slot.
pub struct SupervisorSlot<M> {
    /// The domain's name, for what clients are told ("the race domain is restarting").
    domain: &'static str,
    /// The latest incarnation that finished recovery, if any yet.
    current: Arc<Mutex<Option<ActorRef<M>>>>,
}

impl<M> Clone for SupervisorSlot<M> {
    fn clone(&self) -> Self {
        SupervisorSlot {
            domain: self.domain,
            current: Arc::clone(&self.current),
        }
    }
}

impl<M: Message> SupervisorSlot<M> {
    /// An empty slot for `domain`'s supervisor.
    pub fn new(domain: &'static str) -> Self {
        SupervisorSlot {
            domain,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// Called by a supervisor once it has recovered its domain: it is the one to ask now.
    pub fn publish(&self, supervisor: ActorRef<M>) {
        // A poisoned lock still holds a valid handle (a panic cannot leave it half written).
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(supervisor);
    }

    /// The current incarnation, or `unavailable` while none has recovered yet.
    pub fn current(&self) -> Result<ActorRef<M>, Rejection> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::Unavailable,
                    format!("the {} domain is restarting; retry", self.domain),
                )
            })
    }

    /// Asks the current supervisor `question` (see [`ask`]).
    pub async fn ask<T: Send + 'static>(
        &self,
        question: impl FnOnce(RpcReplyPort<T>) -> M,
        timeout: Duration,
    ) -> Result<T, Rejection> {
        let who = format!("the {} supervisor", self.domain);
        ask(&self.current()?, question, timeout, &who).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    /// A supervisor stand-in that never answers anything it is not asked.
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_slot_is_unavailable_until_a_supervisor_publishes_itself() {
        let slot = SupervisorSlot::<()>::new("race");
        let refused = slot.current().unwrap_err();
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert_eq!(refused.message, "the race domain is restarting; retry");
        let (first, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        let (second, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        slot.clone().publish(first.clone());
        assert_eq!(
            slot.current().unwrap().get_id(),
            first.get_id(),
            "clones share"
        );
        slot.publish(second.clone());
        assert_eq!(
            slot.current().unwrap().get_id(),
            second.get_id(),
            "the latest wins"
        );
        first.stop(None);
        second.stop(None);
    }
}
