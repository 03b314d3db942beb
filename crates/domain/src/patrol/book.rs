//! The patrol book: everything patrol keeps durably except the messages themselves, as one
//! event-sourced state (the directory, the rewards ledger, citizens' profiles, who is
//! connected to whom, and where each conversation stands).
//!
//! One actor (the shell's `book_actor`, through the journaled shell; the decisions are in
//! [`super::book_rules`]) owns the book, so a connection's two awards, a
//! redemption's balance check and a voucher's serial are decided in one place, in order.
//! Messages are journaled per conversation (`dm/<a>~<b>`), not here, so a page of history
//! is one range read; the book only numbers them and remembers what each user has had.

use super::directory::Directory;
use super::import::ImportRows;
use super::ledger::{Ledger, LedgerEvent};
use crate::error::{ErrorCode, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Longest display name, characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 120;
/// Message request ids remembered per sender, for idempotent sends.
pub const REMEMBERED_SENDS: usize = 256;

/// What a citizen tells about themself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The name officers see in connect requests.
    pub display_name: String,
    /// Where thank-you and voucher mails go.
    pub email: Option<String>,
}

/// A change to the book; journaled under `patrol/book` before it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BookEvent {
    /// Rows imported by an admin (a re-imported id replaces the row).
    Imported(ImportRows),
    /// A user set their profile.
    ProfileSet {
        /// The user.
        user: String,
        /// The profile.
        profile: Profile,
    },
    /// A rewards ledger event (connections, redemptions, donations).
    Ledger(LedgerEvent),
}

/// One conversation's numbering and delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The last message's sequence number (0: none yet).
    pub last_seq: u64,
    /// Per participant, the last seq pushed to one of their sessions.
    pub delivered: BTreeMap<String, u64>,
}

/// Where a message goes, decided before it is journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagePlan {
    /// Journal it as `seq` of conversation `pair`.
    Store {
        /// The conversation key.
        pair: String,
        /// Its number.
        seq: u64,
    },
    /// The same request was stored before as `seq`: answer with that message.
    Replayed {
        /// The conversation key.
        pair: String,
        /// Its number.
        seq: u64,
    },
}

/// The book's state: a fold of [`BookEvent`]s plus conversation bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// Officers, offers, charities.
    pub directory: Directory,
    /// Points.
    pub ledger: Ledger,
    /// Citizens' profiles.
    profiles: BTreeMap<String, Profile>,
    /// Who has a connection with whom, both ways: only they may message each other, and a
    /// user's conversations are found through it without scanning everyone's.
    contacts: BTreeMap<String, BTreeSet<String>>,
    /// Where each conversation stands. Last, and encoded as its two maps, so a snapshot
    /// reads the same as when they were fields of the book.
    talk: Conversations,
}

/// Conversation bookkeeping: numbering, delivery cursors and recent request ids. It is not
/// a fold of book events (messages are journaled per conversation, and recovery replays them
/// into it), so the shell changes it with `Journaled::amend`; snapshots keep it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Conversations {
    /// Conversations by pair key.
    conversations: BTreeMap<String, Conversation>,
    /// Per sender, recent message request ids and where they went (oldest first).
    sends: BTreeMap<String, VecDeque<(String, String, u64)>>,
}

/// The key of the conversation between `a` and `b`: the two ids in order, joined by `~`
/// (which ids cannot contain).
pub fn pair_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}~{b}")
    } else {
        format!("{b}~{a}")
    }
}

/// Checks a display name: trimmed, 1..=120 characters, no control characters.
pub fn validate_display_name(name: &str) -> Result<String, Rejection> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(Rejection::invalid(format!(
            "display_name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters, got {chars}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            "display_name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

impl Book {
    /// Folds one event in (the aggregate's `apply`). Never fails: events were validated
    /// before they were journaled.
    pub(super) fn fold(&mut self, event: &BookEvent) {
        match event {
            BookEvent::Imported(rows) => {
                self.directory.upsert(rows);
            }
            BookEvent::ProfileSet { user, profile } => {
                self.profiles.insert(user.clone(), profile.clone());
            }
            BookEvent::Ledger(event) => {
                if let LedgerEvent::Connected {
                    officer, citizen, ..
                } = event
                {
                    self.connect(officer, citizen);
                }
                self.ledger.apply(event);
            }
        }
    }

    /// The name others see for `user`: an officer's imported name, a citizen's profile
    /// name, else the id itself.
    pub fn display_name(&self, user: &str) -> String {
        if let Some(officer) = self.directory.officer(user) {
            return officer.display_name.clone();
        }
        self.profiles
            .get(user)
            .map_or_else(|| user.to_owned(), |p| p.display_name.clone())
    }

    /// Where `user`'s mails go, if anywhere.
    pub fn email(&self, user: &str) -> Option<String> {
        if let Some(officer) = self.directory.officer(user) {
            return officer.email.clone();
        }
        self.profiles.get(user).and_then(|p| p.email.clone())
    }

    /// Whether `a` and `b` have ever connected.
    pub fn connected(&self, a: &str, b: &str) -> bool {
        self.contacts.get(a).is_some_and(|with| with.contains(b))
    }

    /// Decides where a message from `from` to `to` goes: only between connected users, with
    /// 1..=`max_chars` characters; a request id seen before returns the stored message.
    pub fn plan_message(
        &self,
        from: &str,
        to: &str,
        request_id: &str,
        text: &str,
        max_chars: usize,
    ) -> Result<MessagePlan, Rejection> {
        let pair = pair_key(from, to);
        let stored = self.talk.sends.get(from).and_then(|sent| {
            sent.iter()
                .find(|(id, _, _)| id == request_id)
                .map(|(_, pair, seq)| (pair.clone(), *seq))
        });
        if let Some((stored_pair, seq)) = stored {
            if stored_pair != pair {
                return Err(Rejection::new(
                    ErrorCode::Conflict,
                    format!("request id {request_id} was used for a message to someone else"),
                ));
            }
            return Ok(MessagePlan::Replayed { pair, seq });
        }
        if from == to {
            return Err(Rejection::invalid("to: cannot message yourself"));
        }
        if !self.connected(from, to) {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("you can only message users you have connected with; not {to}"),
            ));
        }
        let chars = text.chars().count();
        if chars == 0 || chars > max_chars {
            return Err(Rejection::invalid(format!(
                "text must be 1 to {max_chars} characters, got {chars}"
            )));
        }
        let seq = self.last_seq(&pair).saturating_add(1);
        Ok(MessagePlan::Store { pair, seq })
    }

    /// A message was queued for the journal (or found there on recovery) as `seq` of
    /// `pair`. The sender has its own message, so its cursor moves past it when it had
    /// everything before.
    pub fn message_stored(&mut self, pair: &str, seq: u64, from: &str, request_id: &str) {
        let talk = &mut self.talk;
        let conversation = talk.conversations.entry(pair.to_owned()).or_default();
        conversation.last_seq = conversation.last_seq.max(seq);
        let cursor = conversation.delivered.entry(from.to_owned()).or_insert(0);
        if *cursor + 1 == seq {
            *cursor = seq;
        }
        let sent = talk.sends.entry(from.to_owned()).or_default();
        sent.push_back((request_id.to_owned(), pair.to_owned(), seq));
        while sent.len() > REMEMBERED_SENDS {
            sent.pop_front();
        }
    }

    /// A message whose journal write failed: its request id is forgotten, so sending it
    /// again stores it (its number stays unused).
    pub fn forget_send(&mut self, from: &str, request_id: &str) {
        if let Some(sent) = self.talk.sends.get_mut(from) {
            sent.retain(|(id, _, _)| id != request_id);
        }
    }

    /// The last message's number in `pair` as the book knows it (0: none); recovery
    /// replays the messages the journal has beyond it.
    pub fn last_seq(&self, pair: &str) -> u64 {
        self.talk.conversations.get(pair).map_or(0, |c| c.last_seq)
    }

    /// Conversations of `user` with messages not yet pushed to them: (pair, last delivered
    /// seq, last seq).
    pub fn undelivered(&self, user: &str) -> Vec<(String, u64, u64)> {
        let talk = &self.talk;
        self.contacts
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|other| {
                let pair = pair_key(user, other);
                let c = talk.conversations.get(&pair)?;
                let delivered = c.delivered.get(user).copied().unwrap_or(0);
                (delivered < c.last_seq).then_some((pair, delivered, c.last_seq))
            })
            .collect()
    }

    fn connect(&mut self, a: &str, b: &str) {
        for (one, other) in [(a, b), (b, a)] {
            self.contacts
                .entry(one.to_owned())
                .or_default()
                .insert(other.to_owned());
        }
    }

    /// Messages of `pair` up to `seq` were pushed to a session of `user`.
    pub fn delivered(&mut self, user: &str, pair: &str, seq: u64) {
        if let Some(c) = self.talk.conversations.get_mut(pair) {
            let cursor = c.delivered.entry(user.to_owned()).or_insert(0);
            *cursor = (*cursor).max(seq);
        }
    }

    /// Roughly how many items the snapshot holds, so snapshots are taken less often as it
    /// grows (each costs time proportional to its size).
    pub fn size_hint(&self) -> usize {
        self.ledger.entry_count() + self.profiles.len() + self.talk.conversations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregate;

    fn connect(book: &mut Book, officer: &str, citizen: &str) {
        book.connect(officer, citizen);
    }

    #[test]
    fn only_connected_users_message_each_other_within_the_length() {
        let mut book = Book::default();
        assert_eq!(
            book.plan_message("c1", "o1", "m1", "hi", 10)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        connect(&mut book, "o1", "c1");
        assert_eq!(
            book.plan_message("c1", "o1", "m1", "hi", 10).unwrap(),
            MessagePlan::Store {
                pair: "c1~o1".into(),
                seq: 1
            }
        );
        assert!(book.plan_message("c1", "o1", "m1", "", 10).is_err());
        assert!(book
            .plan_message("c1", "o1", "m1", "12345678901", 10)
            .is_err());
    }

    #[test]
    fn a_repeated_send_returns_the_stored_message_and_a_reused_id_conflicts() {
        let mut book = Book::default();
        connect(&mut book, "o1", "c1");
        connect(&mut book, "o2", "c1");
        book.message_stored("c1~o1", 1, "c1", "m1");
        assert_eq!(
            book.plan_message("c1", "o1", "m1", "hi", 10).unwrap(),
            MessagePlan::Replayed {
                pair: "c1~o1".into(),
                seq: 1
            }
        );
        assert_eq!(
            book.plan_message("c1", "o2", "m1", "hi", 10)
                .unwrap_err()
                .code,
            ErrorCode::Conflict
        );
        assert_eq!(
            book.plan_message("c1", "o1", "m2", "hi", 10).unwrap(),
            MessagePlan::Store {
                pair: "c1~o1".into(),
                seq: 2
            }
        );
    }

    #[test]
    fn undelivered_conversations_follow_each_users_cursor() {
        let mut book = Book::default();
        connect(&mut book, "o1", "c1");
        book.message_stored("c1~o1", 1, "c1", "a");
        book.message_stored("c1~o1", 2, "c1", "b");
        assert_eq!(book.undelivered("o1"), vec![("c1~o1".into(), 0, 2)]);
        assert!(
            book.undelivered("c1").is_empty(),
            "a sender has its own messages"
        );
        book.delivered("o1", "c1~o1", 2);
        assert!(book.undelivered("o1").is_empty());
        book.message_stored("c1~o1", 3, "o1", "c");
        assert_eq!(book.undelivered("c1"), vec![("c1~o1".into(), 2, 3)]);
        assert!(
            book.undelivered("o").is_empty(),
            "a prefix is not a participant"
        );
    }

    /// The book as it was stored when its conversation bookkeeping was two fields of its own:
    /// snapshots written then must still decode, and new ones read the same.
    #[derive(Serialize, Deserialize)]
    struct StoredBefore {
        directory: Directory,
        ledger: Ledger,
        profiles: BTreeMap<String, Profile>,
        contacts: BTreeMap<String, BTreeSet<String>>,
        conversations: BTreeMap<String, Conversation>,
        sends: BTreeMap<String, VecDeque<(String, String, u64)>>,
    }

    #[test]
    fn a_snapshot_encodes_as_before_the_bookkeeping_moved() {
        let mut book = Book::default();
        connect(&mut book, "o1", "c1");
        book.apply(&BookEvent::ProfileSet {
            user: "c1".into(),
            profile: Profile {
                display_name: "Ana".into(),
                email: None,
            },
        });
        book.message_stored("c1~o1", 1, "c1", "m1");
        book.delivered("o1", "c1~o1", 1);
        let talk = book.talk.clone();
        let before = StoredBefore {
            directory: book.directory.clone(),
            ledger: book.ledger.clone(),
            profiles: book.profiles.clone(),
            contacts: book.contacts.clone(),
            conversations: talk.conversations,
            sends: talk.sends,
        };
        let config = bincode::config::standard();
        let old = bincode::serde::encode_to_vec(&before, config).unwrap();
        assert_eq!(bincode::serde::encode_to_vec(&book, config).unwrap(), old);
        let (back, _): (Book, usize) = bincode::serde::decode_from_slice(&old, config).unwrap();
        assert_eq!(back, book);
        assert_eq!(back.last_seq("c1~o1"), 1);
    }

    #[test]
    fn display_names_fall_back_to_the_id() {
        let mut book = Book::default();
        assert_eq!(book.display_name("c1"), "c1");
        book.apply(&BookEvent::ProfileSet {
            user: "c1".into(),
            profile: Profile {
                display_name: "Ana".into(),
                email: None,
            },
        });
        assert_eq!(book.display_name("c1"), "Ana");
        assert!(validate_display_name("  ").is_err());
        assert!(validate_display_name("a\u{7}").is_err());
        assert_eq!(validate_display_name(" Ana ").unwrap(), "Ana");
    }
}
