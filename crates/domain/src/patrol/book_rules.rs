//! The book's decisions: what a profile, an import, a connection, a redemption or a
//! donation means for the [`Book`], as an [`Aggregate`] the server's one journaled shell
//! runs.
//!
//! Besides the events, a decision says what follows once they are durable
//! ([`BookOutcome`]): the answers both sides of a connection see, the voucher a redemption
//! issues (signed here, from the event, so a retried request id gets the same code), and
//! the mails to send, as plain data with the correlation and sequence that make the mail
//! domain send each once. The shell only submits them.
//!
//! Messages are not book commands: they are journaled per conversation, and the book only
//! numbers them ([`Book::plan_message`]).

use super::book::{validate_display_name, Book, BookEvent, Profile};
use super::import::{ImportKind, ImportRows};
use super::ledger::LedgerEvent;
use super::ledger::{
    utc_day, AwardRules, ConnectRequest, Decision as Ledger, DonateRequest, LedgerCommand,
    LedgerError,
};
use super::notice::Connection;
use super::voucher::{self, Voucher, VoucherKey};
use crate::aggregate::{Aggregate, Decision};
use crate::error::{ErrorCode, Rejection};
use crate::ids::validate_email;
use crate::mail::message::MailMessage;
use crate::time::UnixMillis;

/// What the book is asked to do; every change it journals comes from one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum BookCommand {
    /// A user sets their profile (checked here: trimmed name, valid address).
    SetProfile {
        /// The user.
        user: String,
        /// The name others see.
        display_name: String,
        /// Where their mails go.
        email: Option<String>,
    },
    /// An admin imports rows (already validated by the API).
    Import(ImportRows),
    /// An officer accepted a citizen they met in person.
    Connect(ConnectRequest),
    /// A user spends points on an offer.
    Redeem {
        /// Idempotency key.
        request_id: String,
        /// The user.
        user: String,
        /// The offer.
        offer_id: String,
        /// When, ms since the epoch.
        at_ms: UnixMillis,
    },
    /// A user gives points to a charity.
    Donate(DonateRequest),
}

/// What the book's decisions read besides the book: the configured awards and the key
/// vouchers are signed with. Times come with each command.
#[derive(Debug, Clone, Copy)]
pub struct BookContext<'a> {
    /// Points per connection and the daily cap.
    pub award: &'a AwardRules,
    /// Signs voucher codes.
    pub voucher_key: &'a VoucherKey,
}

/// A mail the book decided to send, as the mail domain takes it. The same correlation and
/// sequence are sent once however often they are submitted, so a retried request may
/// submit them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookMail {
    /// Names what the mail is about (`patrol-thanks.<connection>`,
    /// `patrol-voucher.<serial>`).
    pub correlation: String,
    /// Its number within the correlation.
    pub sequence: u64,
    /// When the book decided it (the command's time).
    pub sent_at_ms: UnixMillis,
    /// The user whose address `message.to` is.
    pub contact: String,
    /// Recipient, subject and body.
    pub message: MailMessage,
}

/// A redemption as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// The voucher code.
    pub voucher_code: String,
    /// Points spent.
    pub points: u64,
    /// Balance after.
    pub balance: u64,
}

/// What follows from a decision once its events are durable.
#[derive(Debug, Clone, PartialEq)]
pub enum BookOutcome {
    /// The profile is saved.
    ProfileSet,
    /// Rows were written (the shell reads how many of the kind are stored now).
    Imported {
        /// Rows in the import.
        written: u64,
        /// Which table.
        kind: ImportKind,
    },
    /// A connection is recorded (or was, for a retry).
    Connected {
        /// As the officer sees it.
        for_officer: Connection,
        /// As the citizen sees it.
        for_citizen: Connection,
        /// Thank-you mails to whoever has an address.
        mails: Vec<BookMail>,
    },
    /// Points were spent on an offer (or were, for a retry).
    Redeemed {
        /// The answer, with the voucher.
        redemption: Redemption,
        /// The voucher mail, if the user has an address.
        mails: Vec<BookMail>,
    },
    /// Points were given (or were, for a retry).
    Donated {
        /// Points given.
        points: u64,
        /// Balance after.
        balance: u64,
    },
}

impl BookOutcome {
    /// The mails the shell submits once the events are durable.
    pub fn mails(&self) -> &[BookMail] {
        match self {
            BookOutcome::Connected { mails, .. } | BookOutcome::Redeemed { mails, .. } => mails,
            _ => &[],
        }
    }
}

/// A ledger refusal as the client sees it.
pub fn ledger_rejection(e: LedgerError) -> Rejection {
    let code = match e.code() {
        "insufficient_points" => ErrorCode::InsufficientPoints,
        "conflict" | "already_exists" => ErrorCode::Conflict,
        _ => ErrorCode::InvalidArgument,
    };
    Rejection::new(code, e.to_string())
}

/// Checks a profile from a client.
pub fn profile(display_name: &str, email: Option<&str>) -> Result<Profile, Rejection> {
    let display_name = validate_display_name(display_name)?;
    let email = match email {
        None => None,
        Some(address) => {
            let address = address.trim().to_owned();
            validate_email("email", &address)?;
            Some(address)
        }
    };
    Ok(Profile {
        display_name,
        email,
    })
}

/// The thank-you mail to `name` for connecting with `other`.
pub fn thanks_mail(
    to: String,
    name: &str,
    other: &str,
    points: u64,
    connection_id: &str,
) -> MailMessage {
    MailMessage {
        to,
        subject: format!("Thank you for connecting with {other}"),
        body: format!(
            "Hello {name},\n\nthank you for connecting with {other}. \
             This connection earned you {points} points.\n\n\
             Connection {connection_id}.\n"
        ),
    }
}

/// The mail carrying voucher `code` for `title` at `retailer` to `name`.
pub fn voucher_mail(
    to: String,
    name: &str,
    title: &str,
    retailer: &str,
    code: &str,
    cost: u64,
    request_id: &str,
) -> MailMessage {
    MailMessage {
        to,
        subject: format!("Your voucher: {title}"),
        body: format!(
            "Hello {name},\n\nhere is your voucher for {title} at {retailer}:\n\n    {code}\n\n\
             It cost {cost} points (request {request_id}).\n"
        ),
    }
}

/// The ledger's answer to `command`: the event it made before (a retry, nothing to
/// journal) or the new events.
fn ledger(
    book: &Book,
    command: &LedgerCommand,
    rules: &AwardRules,
) -> Result<(LedgerEvent, Vec<BookEvent>), Rejection> {
    match book
        .ledger
        .handle(command, rules)
        .map_err(ledger_rejection)?
    {
        Ledger::Replayed(event) => Ok((event, Vec::new())),
        Ledger::Apply(events) => {
            let last = events
                .last()
                .cloned()
                .ok_or_else(|| Rejection::internal("the ledger decided nothing"))?;
            Ok((last, events.into_iter().map(BookEvent::Ledger).collect()))
        }
    }
}

/// A user's balance once `events` are applied (they only debit or credit as they say).
fn balance_after(book: &Book, user: &str, events: &[BookEvent], debit: u64) -> u64 {
    let balance = book.ledger.balance(user);
    if events.is_empty() {
        balance
    } else {
        balance.saturating_sub(debit)
    }
}

impl Book {
    fn decide_connect(
        &self,
        command: LedgerCommand,
        award: &AwardRules,
    ) -> Result<Decision<BookEvent, BookOutcome>, Rejection> {
        let (event, events) = ledger(self, &command, award)?;
        let LedgerEvent::Connected {
            connection_id,
            officer,
            citizen,
            at_ms,
            officer_points,
            citizen_points,
            ..
        } = event
        else {
            return Err(Rejection::internal("a connection recorded something else"));
        };
        let officer_name = self.display_name(&officer);
        let citizen_name = self.display_name(&citizen);
        let for_officer = Connection {
            connection_id: connection_id.clone(),
            officer: officer.clone(),
            citizen: citizen.clone(),
            with_name: citizen_name.clone(),
            points: officer_points,
            at_ms,
        };
        let for_citizen = Connection {
            with_name: officer_name.clone(),
            points: citizen_points,
            ..for_officer.clone()
        };
        let mut mails = Vec::new();
        for (sequence, user, name, other, points) in [
            (1, &citizen, &citizen_name, &officer_name, citizen_points),
            (2, &officer, &officer_name, &citizen_name, officer_points),
        ] {
            if let Some(to) = self.email(user) {
                mails.push(BookMail {
                    correlation: format!("patrol-thanks.{connection_id}"),
                    sequence,
                    sent_at_ms: at_ms,
                    contact: user.clone(),
                    message: thanks_mail(to, name, other, points, &connection_id),
                });
            }
        }
        Ok(Decision {
            events,
            outcome: BookOutcome::Connected {
                for_officer,
                for_citizen,
                mails,
            },
        })
    }

    fn decide_redeem(
        &self,
        request_id: String,
        user: String,
        offer_id: String,
        at_ms: UnixMillis,
        context: BookContext<'_>,
    ) -> Result<Decision<BookEvent, BookOutcome>, Rejection> {
        let Some(offer) = self.directory.offer(&offer_id) else {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!("no offer {offer_id}"),
            ));
        };
        let command = LedgerCommand::Redeem {
            request_id,
            user: user.clone(),
            offer_id,
            cost: offer.points,
            at_ms,
            precinct: None,
        };
        let (event, events) = ledger(self, &command, context.award)?;
        let LedgerEvent::Redeemed {
            request_id,
            offer_id,
            cost,
            voucher_serial,
            at_ms,
            ..
        } = event
        else {
            return Err(Rejection::new(
                ErrorCode::Conflict,
                "that request id was used for something else",
            ));
        };
        // Signed from the event, so a retry of the request id gets the very same code.
        let code = voucher::issue(
            context.voucher_key,
            &Voucher {
                serial: voucher_serial,
                offer_id,
                points: cost,
                issued_day: utc_day(at_ms),
                holder: user.clone(),
            },
        );
        let mails = self
            .email(&user)
            .map(|to| BookMail {
                correlation: format!("patrol-voucher.{voucher_serial}"),
                sequence: 1,
                sent_at_ms: at_ms,
                contact: user.clone(),
                message: voucher_mail(
                    to,
                    &self.display_name(&user),
                    &offer.title,
                    &offer.retailer,
                    &code,
                    cost,
                    &request_id,
                ),
            })
            .into_iter()
            .collect();
        let balance = balance_after(self, &user, &events, cost);
        Ok(Decision {
            events,
            outcome: BookOutcome::Redeemed {
                redemption: Redemption {
                    voucher_code: code,
                    points: cost,
                    balance,
                },
                mails,
            },
        })
    }

    fn decide_donate(
        &self,
        command: LedgerCommand,
        user: &str,
        award: &AwardRules,
    ) -> Result<Decision<BookEvent, BookOutcome>, Rejection> {
        let (event, events) = ledger(self, &command, award)?;
        let LedgerEvent::Donated { points, .. } = event else {
            return Err(Rejection::new(
                ErrorCode::Conflict,
                "that request id was used for something else",
            ));
        };
        let balance = balance_after(self, user, &events, points);
        Ok(Decision {
            events,
            outcome: BookOutcome::Donated { points, balance },
        })
    }
}

impl Aggregate for Book {
    type Command = BookCommand;
    type Event = BookEvent;
    type Context<'a> = BookContext<'a>;
    type Outcome = BookOutcome;

    fn decide(
        &self,
        command: BookCommand,
        context: BookContext<'_>,
    ) -> Result<Decision<BookEvent, BookOutcome>, Rejection> {
        match command {
            BookCommand::SetProfile {
                user,
                display_name,
                email,
            } => {
                let profile = profile(&display_name, email.as_deref())?;
                Ok(Decision {
                    events: vec![BookEvent::ProfileSet { user, profile }],
                    outcome: BookOutcome::ProfileSet,
                })
            }
            BookCommand::Import(rows) => {
                let outcome = BookOutcome::Imported {
                    written: rows.len() as u64,
                    kind: rows.kind(),
                };
                Ok(Decision {
                    events: vec![BookEvent::Imported(rows)],
                    outcome,
                })
            }
            BookCommand::Connect(connect) => {
                self.decide_connect(LedgerCommand::Connect(connect), context.award)
            }
            BookCommand::Redeem {
                request_id,
                user,
                offer_id,
                at_ms,
            } => self.decide_redeem(request_id, user, offer_id, at_ms, context),
            BookCommand::Donate(donation) => {
                if self.directory.charity(&donation.charity_id).is_none() {
                    return Err(Rejection::new(
                        ErrorCode::NotFound,
                        format!("no charity {}", donation.charity_id),
                    ));
                }
                let user = donation.user.clone();
                self.decide_donate(LedgerCommand::Donate(donation), &user, context.award)
            }
        }
    }

    fn apply(&mut self, event: &BookEvent) {
        self.fold(event);
    }

    fn size_hint(&self) -> usize {
        Book::size_hint(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patrol::import::{Charity, Offer, Officer};
    use crate::patrol::voucher::verify;
    use proptest::prelude::*;

    const AWARD: AwardRules = AwardRules {
        officer_points: 10,
        citizen_points: 10,
        daily_cap: 100,
    };
    const DAY: UnixMillis = 1_700_000_000_000;

    fn key() -> VoucherKey {
        VoucherKey::from_bytes([7; 32])
    }

    /// Decides and applies, as the journaled shell does once the events are durable.
    fn run(book: &mut Book, command: BookCommand) -> Result<BookOutcome, Rejection> {
        let key = key();
        let context = BookContext {
            award: &AWARD,
            voucher_key: &key,
        };
        let decision = book.decide(command, context)?;
        for event in &decision.events {
            book.apply(event);
        }
        Ok(decision.outcome)
    }

    /// An officer with an address, a citizen with a profile and address, an offer and a
    /// charity.
    fn book() -> Book {
        let mut book = Book::default();
        let officer = Officer {
            id: "o1".into(),
            display_name: "Officer Ade".into(),
            precinct: "p1".into(),
            email: Some("ade@police.example".into()),
        };
        run(
            &mut book,
            BookCommand::Import(ImportRows::Officers(vec![officer])),
        )
        .unwrap();
        let offer = Offer {
            id: "coffee".into(),
            retailer: "Bean Bar".into(),
            title: "A coffee".into(),
            points: 15,
        };
        run(
            &mut book,
            BookCommand::Import(ImportRows::Offers(vec![offer])),
        )
        .unwrap();
        let charity = Charity {
            id: "shelter".into(),
            name: "The Shelter".into(),
        };
        run(
            &mut book,
            BookCommand::Import(ImportRows::Charities(vec![charity])),
        )
        .unwrap();
        run(
            &mut book,
            BookCommand::SetProfile {
                user: "c1".into(),
                display_name: " Ana ".into(),
                email: Some(" ana@example.org ".into()),
            },
        )
        .unwrap();
        book
    }

    fn connect(book: &mut Book, id: &str, at_ms: UnixMillis) -> BookOutcome {
        run(
            book,
            BookCommand::Connect(ConnectRequest {
                connection_id: id.into(),
                officer: "o1".into(),
                citizen: "c1".into(),
                precinct: "p1".into(),
                at_ms,
            }),
        )
        .unwrap()
    }

    fn redeem(book: &mut Book, request_id: &str) -> Result<BookOutcome, Rejection> {
        run(
            book,
            BookCommand::Redeem {
                request_id: request_id.into(),
                user: "c1".into(),
                offer_id: "coffee".into(),
                at_ms: DAY + 5,
            },
        )
    }

    #[test]
    fn a_connection_thanks_both_sides_by_mail_with_their_names_and_points() {
        let mut book = book();
        let BookOutcome::Connected {
            for_officer,
            for_citizen,
            mails,
        } = connect(&mut book, "k1", DAY)
        else {
            panic!("connected")
        };
        assert_eq!(
            (for_officer.with_name.as_str(), for_officer.points),
            ("Ana", 10)
        );
        assert_eq!(for_citizen.with_name, "Officer Ade");
        assert_eq!(
            mails,
            vec![
                BookMail {
                    correlation: "patrol-thanks.k1".into(),
                    sequence: 1,
                    sent_at_ms: DAY,
                    contact: "c1".into(),
                    message: MailMessage {
                        to: "ana@example.org".into(),
                        subject: "Thank you for connecting with Officer Ade".into(),
                        body: "Hello Ana,\n\nthank you for connecting with Officer Ade. \
                               This connection earned you 10 points.\n\nConnection k1.\n"
                            .into(),
                    },
                },
                BookMail {
                    correlation: "patrol-thanks.k1".into(),
                    sequence: 2,
                    sent_at_ms: DAY,
                    contact: "o1".into(),
                    message: MailMessage {
                        to: "ade@police.example".into(),
                        subject: "Thank you for connecting with Ana".into(),
                        body: "Hello Officer Ade,\n\nthank you for connecting with Ana. \
                               This connection earned you 10 points.\n\nConnection k1.\n"
                            .into(),
                    },
                },
            ]
        );
        assert!(book.connected("c1", "o1"));
        // A retry journals nothing and submits the same mails (the mail domain sends once).
        let decision = book
            .decide(
                BookCommand::Connect(ConnectRequest {
                    connection_id: "k1".into(),
                    officer: "o1".into(),
                    citizen: "c1".into(),
                    precinct: "p1".into(),
                    at_ms: DAY,
                }),
                BookContext {
                    award: &AWARD,
                    voucher_key: &key(),
                },
            )
            .unwrap();
        assert!(decision.events.is_empty());
        assert_eq!(decision.outcome.mails(), mails.as_slice());
    }

    #[test]
    fn users_without_an_address_get_no_mail() {
        let mut book = Book::default();
        let BookOutcome::Connected { mails, .. } = connect(&mut book, "k1", DAY) else {
            panic!("connected")
        };
        assert!(mails.is_empty());
    }

    #[test]
    fn a_redemption_issues_one_verifiable_voucher_per_request_id_and_mails_it() {
        let mut book = book();
        connect(&mut book, "k1", DAY);
        connect(&mut book, "k2", DAY + 86_400_000);
        let BookOutcome::Redeemed { redemption, mails } = redeem(&mut book, "r1").unwrap() else {
            panic!("redeemed")
        };
        assert_eq!((redemption.points, redemption.balance), (15, 5));
        let voucher = verify(&key(), &redemption.voucher_code).unwrap();
        assert_eq!(
            (
                voucher.serial,
                voucher.offer_id.as_str(),
                voucher.holder.as_str()
            ),
            (1, "coffee", "c1")
        );
        assert_eq!(
            mails,
            vec![BookMail {
                correlation: "patrol-voucher.1".into(),
                sequence: 1,
                sent_at_ms: DAY + 5,
                contact: "c1".into(),
                message: MailMessage {
                    to: "ana@example.org".into(),
                    subject: "Your voucher: A coffee".into(),
                    body: format!(
                        "Hello Ana,\n\nhere is your voucher for A coffee at Bean Bar:\n\n    {}\n\n\
                         It cost 15 points (request r1).\n",
                        redemption.voucher_code
                    ),
                },
            }]
        );
        // The retry: the same code and mail, no second debit.
        let again = redeem(&mut book, "r1").unwrap();
        assert_eq!(
            again,
            BookOutcome::Redeemed {
                redemption: redemption.clone(),
                mails
            }
        );
        assert_eq!(book.ledger.balance("c1"), 5);
        assert_eq!(
            redeem(&mut book, "r2").unwrap_err().code,
            ErrorCode::InsufficientPoints
        );
    }

    #[test]
    fn unknown_offers_and_charities_are_not_found_and_change_nothing() {
        let mut book = book();
        connect(&mut book, "k1", DAY);
        let before = book.clone();
        let missing = run(
            &mut book,
            BookCommand::Redeem {
                request_id: "r1".into(),
                user: "c1".into(),
                offer_id: "tea".into(),
                at_ms: DAY,
            },
        );
        assert_eq!(missing.unwrap_err().code, ErrorCode::NotFound);
        let donation = |charity: &str, request_id: &str| {
            BookCommand::Donate(DonateRequest {
                request_id: request_id.into(),
                user: "c1".into(),
                charity_id: charity.into(),
                points: 4,
                at_ms: DAY,
            })
        };
        assert_eq!(
            run(&mut book, donation("zoo", "d1")).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(book, before);
        let given = run(&mut book, donation("shelter", "d1")).unwrap();
        assert_eq!(
            given,
            BookOutcome::Donated {
                points: 4,
                balance: 6
            }
        );
        assert_eq!(run(&mut book, donation("shelter", "d1")).unwrap(), given);
        assert_eq!(book.ledger.balance("c1"), 6);
        // The same id for a redemption is someone else's request.
        assert_eq!(
            redeem(&mut book, "d1").unwrap_err().code,
            ErrorCode::Conflict
        );
    }

    #[test]
    fn profiles_are_checked_before_anything_is_journaled() {
        let book = book();
        let context = BookContext {
            award: &AWARD,
            voucher_key: &key(),
        };
        let bad_name = BookCommand::SetProfile {
            user: "c2".into(),
            display_name: "  ".into(),
            email: None,
        };
        assert!(book.decide(bad_name, context).is_err());
        let bad_mail = BookCommand::SetProfile {
            user: "c2".into(),
            display_name: "Bo".into(),
            email: Some("not an address".into()),
        };
        assert!(book.decide(bad_mail, context).is_err());
        assert_eq!(book.email("c1").as_deref(), Some("ana@example.org"));
        assert_eq!(book.display_name("c1"), "Ana");
    }

    proptest! {
        /// However redemptions are retried and interleaved, each request id gets exactly one
        /// serial and one code, a retry debits nothing, and the balance never goes negative.
        #[test]
        fn a_request_id_is_one_voucher_however_often_it_is_sent(
            requests in proptest::collection::vec(0u8..6, 1..30),
        ) {
            let mut book = book();
            for day in 0..4 {
                connect(&mut book, &format!("k{day}"), DAY + day * 86_400_000);
            }
            let mut codes: std::collections::BTreeMap<u8, String> = Default::default();
            let mut spent = 0;
            for request in requests {
                let id = format!("r{request}");
                match redeem(&mut book, &id) {
                    Ok(BookOutcome::Redeemed { redemption, .. }) => {
                        let first = codes.entry(request).or_insert_with(|| {
                            spent += redemption.points;
                            redemption.voucher_code.clone()
                        });
                        prop_assert_eq!(&*first, &redemption.voucher_code);
                        prop_assert_eq!(redemption.balance, book.ledger.balance("c1"));
                    }
                    Ok(other) => prop_assert!(false, "{:?}", other),
                    Err(e) => {
                        prop_assert_eq!(e.code, ErrorCode::InsufficientPoints);
                        prop_assert!(!codes.contains_key(&request));
                    }
                }
            }
            prop_assert_eq!(book.ledger.balance("c1"), 40 - spent);
            let serials: std::collections::BTreeSet<u64> = codes
                .values()
                .map(|code| verify(&key(), code).unwrap().serial)
                .collect();
            prop_assert_eq!(serials.len(), codes.len());
        }
    }
}
