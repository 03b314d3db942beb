//! The out-of-order rule for updates (pure): an update carrying an older sent-at than the
//! state it would change is stale and ignored, with both timestamps reported so the caller
//! can log them.
//!
//! Mail applies it to contacts: an envelope message may name the contact it writes to
//! (`contact`), which records the contact's address as of the envelope's sent-at. A later
//! envelope that arrives first wins; the late, older one is sent to the newer address.

use crate::time::UnixMillis;
use std::collections::HashMap;

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The value changed (or was first set).
    Applied,
    /// The same value at a newer time: only the time moved.
    Unchanged,
    /// Older than the state: ignored.
    Stale {
        /// The sent-at of the state that stays.
        current_ms: UnixMillis,
        /// The sent-at of the ignored update.
        update_ms: UnixMillis,
    },
}

/// Contacts' addresses, each with the sent-at of the update that set it.
#[derive(Debug, Clone, Default)]
pub struct ContactBook {
    /// Address and its sent-at by contact id.
    contacts: HashMap<String, (String, UnixMillis)>,
}

impl ContactBook {
    /// Sets `contact`'s address as of `sent_at_ms`, unless a newer update set it already.
    /// Equal timestamps apply (the later arrival wins a tie).
    pub fn update(&mut self, contact: &str, address: &str, sent_at_ms: UnixMillis) -> Update {
        match self.contacts.get_mut(contact) {
            Some((_, current)) if sent_at_ms < *current => Update::Stale {
                current_ms: *current,
                update_ms: sent_at_ms,
            },
            Some((current_address, current)) => {
                *current = sent_at_ms;
                if current_address == address {
                    Update::Unchanged
                } else {
                    address.clone_into(current_address);
                    Update::Applied
                }
            }
            None => {
                self.contacts
                    .insert(contact.to_owned(), (address.to_owned(), sent_at_ms));
                Update::Applied
            }
        }
    }

    /// `contact`'s current address.
    pub fn address(&self, contact: &str) -> Option<&str> {
        self.contacts.get(contact).map(|(a, _)| a.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_older_update_is_stale_and_reports_both_times() {
        let mut book = ContactBook::default();
        assert_eq!(book.update("ana", "new@example.org", 200), Update::Applied);
        assert_eq!(
            book.update("ana", "old@example.org", 100),
            Update::Stale {
                current_ms: 200,
                update_ms: 100
            }
        );
        assert_eq!(book.address("ana"), Some("new@example.org"));
        assert_eq!(
            book.update("ana", "new@example.org", 300),
            Update::Unchanged
        );
        assert_eq!(
            book.update("ana", "newer@example.org", 300),
            Update::Applied
        );
        assert_eq!(book.address("ana"), Some("newer@example.org"));
    }

    proptest! {
        /// Whatever the arrival order, the address ends as the one with the latest sent-at.
        #[test]
        fn arrival_order_does_not_matter(mut updates in proptest::collection::vec((0i64..1_000_000, 0u8..200), 1..50)) {
            updates.sort_by_key(|(t, _)| *t);
            updates.dedup_by_key(|(t, _)| *t);
            let latest = format!("{}@x", updates.last().unwrap().1);
            let mut shuffled = updates.clone();
            shuffled.reverse();
            let mut book = ContactBook::default();
            for (t, a) in &shuffled {
                book.update("c", &format!("{a}@x"), *t);
            }
            prop_assert_eq!(book.address("c"), Some(latest.as_str()));
        }
    }
}
