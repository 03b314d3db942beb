//! The patrol directory (pure): who may patrol, what points can buy and who can receive
//! donations, keyed by id.
//!
//! The directory only ever grows by imports: the rows an admin's file yields (read and
//! checked by [`super::import`], which the CLI runs before sending and the server runs again
//! on receipt) are merged with [`Directory::upsert`]. It holds no validation of its own, so
//! there is one place that says what a valid officer, offer or charity is.

use super::import::{Charity, ImportRows, Offer, Officer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The server's copy of the directory: who may patrol, what can be redeemed, who can
/// receive donations. Keyed by id, so a re-import replaces rows instead of duplicating them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// Who may go on duty, by officer id (their login subject).
    officers: BTreeMap<String, Officer>,
    /// What points can buy, by offer id (vouchers name it).
    offers: BTreeMap<String, Offer>,
    /// Who can receive donations, by charity id (the ledger names it).
    charities: BTreeMap<String, Charity>,
}

/// How many entries a directory holds, for the admin's summary and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryCounts {
    /// Officer accounts.
    pub officers: u64,
    /// Retailer offers.
    pub offers: u64,
    /// Charities.
    pub charities: u64,
}

/// What an upsert changed, for the reply to the admin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertOutcome {
    /// Rows whose id was new.
    pub added: u64,
    /// Rows that replaced an existing entry with the same id.
    pub replaced: u64,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// The officer with this id.
    pub fn officer(&self, id: &str) -> Option<&Officer> {
        self.officers.get(id)
    }

    /// The offer with this id.
    pub fn offer(&self, id: &str) -> Option<&Offer> {
        self.offers.get(id)
    }

    /// The charity with this id.
    pub fn charity(&self, id: &str) -> Option<&Charity> {
        self.charities.get(id)
    }

    /// All officers, in id order.
    pub fn officers(&self) -> impl Iterator<Item = &Officer> + '_ {
        self.officers.values()
    }

    /// All offers, in id order.
    pub fn offers(&self) -> impl Iterator<Item = &Offer> + '_ {
        self.offers.values()
    }

    /// All charities, in id order.
    pub fn charities(&self) -> impl Iterator<Item = &Charity> + '_ {
        self.charities.values()
    }

    /// Merges imported rows: a row replaces the entry with the same id, others are added;
    /// nothing is deleted (an import is not a full snapshot). Rows should have passed
    /// [`ImportRows::validate`]; this does not check them again.
    pub fn upsert(&mut self, rows: &ImportRows) -> UpsertOutcome {
        fn merge<R: Clone>(
            map: &mut BTreeMap<String, R>,
            rows: &[R],
            id: fn(&R) -> &str,
        ) -> UpsertOutcome {
            let mut outcome = UpsertOutcome::default();
            for row in rows {
                match map.insert(id(row).to_owned(), row.clone()) {
                    Some(_) => outcome.replaced += 1,
                    None => outcome.added += 1,
                }
            }
            outcome
        }
        match rows {
            ImportRows::Officers(rows) => merge(&mut self.officers, rows, |o| &o.id),
            ImportRows::Offers(rows) => merge(&mut self.offers, rows, |o| &o.id),
            ImportRows::Charities(rows) => merge(&mut self.charities, rows, |c| &c.id),
        }
    }

    /// How many entries of each kind.
    pub fn counts(&self) -> DirectoryCounts {
        DirectoryCounts {
            officers: self.officers.len() as u64,
            offers: self.offers.len() as u64,
            charities: self.charities.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patrol::import::{parse_import, ImportKind};

    /// Rows as an admin's CSV file yields them: the directory only ever sees imported rows.
    fn rows(kind: ImportKind, csv: &str) -> ImportRows {
        let report = parse_import(kind, csv.as_bytes(), Some("csv"), |_| {}).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        report.rows
    }

    fn outcome(added: u64, replaced: u64) -> UpsertOutcome {
        UpsertOutcome { added, replaced }
    }

    #[test]
    fn directory_upserts_by_id() {
        let officers = "id,display_name,precinct,email\n";
        let mut dir = Directory::new();
        let first = rows(
            ImportKind::Officers,
            &format!("{officers}o1,Ana,p1,\no2,Bo,p1,\n"),
        );
        assert_eq!(dir.upsert(&first), outcome(2, 0));
        let again = format!("{officers}o2,Bo Renamed,p2,bo@example.org\no3,Cy,p1,\n");
        assert_eq!(
            dir.upsert(&rows(ImportKind::Officers, &again)),
            outcome(1, 1)
        );
        assert_eq!(dir.officer("o2").unwrap().display_name, "Bo Renamed");
        assert_eq!(
            dir.officer("o2").unwrap().email.as_deref(),
            Some("bo@example.org")
        );
        assert_eq!(
            dir.officers().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            vec!["o1", "o2", "o3"]
        );
        let offers = rows(ImportKind::Offers, "id,retailer,title,points\nf,R,T,5\n");
        assert_eq!(dir.upsert(&offers), outcome(1, 0));
        let charities = rows(ImportKind::Charities, "id,name\nc,C\n");
        assert_eq!(dir.upsert(&charities), outcome(1, 0));
        assert_eq!(
            dir.counts(),
            DirectoryCounts {
                officers: 3,
                offers: 1,
                charities: 1
            }
        );
        assert_eq!(dir.offer("f").unwrap().points, 5);
        assert_eq!(dir.charity("c").unwrap().name, "C");
        assert!(dir.offer("nope").is_none());
        assert_eq!(dir.offers().count() + dir.charities().count(), 2);
        let json = serde_json::to_string(&dir).unwrap();
        assert_eq!(serde_json::from_str::<Directory>(&json).unwrap(), dir);
        let bytes = bincode::serde::encode_to_vec(&dir, bincode::config::standard()).unwrap();
        let (back, _): (Directory, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, dir);
    }
}
