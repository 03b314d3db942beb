//! The registry from id to live actor: a sharded concurrent map that request handlers read
//! directly, so finding an actor costs no message to a supervisor.
//!
//! Supervisors are the only writers: they insert on spawn and remove on stop, keyed by the
//! actor id so a late stop of an old incarnation never removes its replacement.

use crate::metrics as m;
use dashmap::DashMap;
use ractor::{ActorId, ActorRef, Message};
use std::hash::Hash;

/// Live actors of one kind by domain id.
pub struct Registry<K, M> {
    /// What kind of actor this is, for the live-actors gauge.
    kind: &'static str,
    /// The handles.
    actors: DashMap<K, ActorRef<M>>,
}

impl<K: Eq + Hash + Clone, M: Message> Registry<K, M> {
    /// An empty registry for actors of `kind`.
    pub fn new(kind: &'static str) -> Self {
        Registry {
            kind,
            actors: DashMap::new(),
        }
    }

    /// The live actor for `id`, if any.
    pub fn get(&self, id: &K) -> Option<ActorRef<M>> {
        self.actors.get(id).map(|a| a.value().clone())
    }

    /// Records the actor now serving `id`.
    pub fn insert(&self, id: K, actor: ActorRef<M>) {
        self.actors.insert(id, actor);
        self.report();
    }

    /// Forgets `id` only if it is still served by the actor `which`.
    pub fn remove_if(&self, id: &K, which: ActorId) {
        self.actors
            .remove_if(id, |_, actor| actor.get_id() == which);
        self.report();
    }

    /// The live actors whose id matches `wanted`, with their ids.
    pub fn entries(&self, wanted: impl Fn(&K) -> bool) -> Vec<(K, ActorRef<M>)> {
        self.actors
            .iter()
            .filter(|e| wanted(e.key()))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Number of live actors.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// True when no actor is live.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    fn report(&self) {
        metrics::gauge!(m::LIVE_ACTORS, "kind" => self.kind).set(self.actors.len() as f64);
    }
}
