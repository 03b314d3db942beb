//! The book actor: the one writer of the patrol book. It decides with the pure rules
//! ([`super::book`], [`super::ledger`]), journals what changed and waits for the flush,
//! applies it, and only then answers; so every acknowledged point, voucher, donation,
//! profile and message survives a crash.
//!
//! Messages are journaled under their conversation's key (`dm/<a>~<b>`); the book's own
//! events under `patrol/book`. A message is numbered and queued for the journal in order,
//! but the book does not wait for its flush before taking the next request: a task answers
//! the sender (and pushes to the recipient) once it is durable, so many conversations share
//! one group commit instead of one flush each.

use super::book::{validate_display_name, Book, BookEvent, MessagePlan, Profile};
use super::context::PatrolContext;
use super::directory::ImportKind;
use super::ledger::{Decision, LedgerCommand, LedgerError, LedgerEvent};
use super::msg::OfficerCard;
use super::notice::{Connection, MessageRecord, Notice, StoredMessage};
use super::voucher::{self, Voucher};
// Kept at their old paths for the facade and the supervisor.
pub use super::msg::{BookMsg, Redemption};
use crate::actors::mail::message::MailMessage;
use crate::actors::mail::{EnvelopeMessage, MailRequest};
use crate::error::{ErrorCode, Rejection};
use crate::metrics as m;
use crate::persist::{ActorKey, Compaction, Durable};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
use std::sync::Arc;

/// Journal kind of the book (`patrol/book`).
pub const KIND: &str = "patrol";
/// Journal kind of conversations (`dm/<a>~<b>`).
pub const CONVERSATION_KIND: &str = "dm";
/// What the client is told when the journal refused a write.
const RETRY: &str = "the patrol book could not be saved; retry";

/// The actor's state.
pub struct BookState {
    /// The book.
    book: Book,
    /// Shared patrol state.
    ctx: Arc<PatrolContext>,
    /// Journal key.
    key: ActorKey,
    /// Last journaled event.
    seq: u64,
    /// Event the last snapshot covers.
    snapshot_seq: u64,
    /// Changes (events and messages) since the last snapshot.
    changes: u64,
    /// Messages queued for the journal and not yet durable, by (sender, request id): a
    /// resend meanwhile is told to retry instead of reading a message not yet on disk.
    storing: HashSet<(String, String)>,
}

/// What a send led to.
enum Sent {
    /// The same request was stored before: this is that message.
    Replayed(StoredMessage),
    /// Queued for the journal: reply once `durable` resolves.
    Queued {
        /// The message.
        message: StoredMessage,
        /// Resolves when it is on disk.
        durable: Durable,
    },
}

/// The ractor behaviour of the book.
pub struct BookActor;

fn ledger_rejection(e: LedgerError) -> Rejection {
    let code = match e.code() {
        "insufficient_points" => ErrorCode::InsufficientPoints,
        "conflict" | "already_exists" => ErrorCode::Conflict,
        _ => ErrorCode::InvalidArgument,
    };
    Rejection::new(code, e.to_string())
}

impl BookState {
    /// Journals `event`, then applies it.
    async fn record(&mut self, event: BookEvent) -> Result<(), Rejection> {
        let seq = self.seq + 1;
        self.ctx
            .journal
            .append_or_unavailable(&self.key, seq, std::slice::from_ref(&event), RETRY)
            .await?;
        self.book.apply(&event);
        self.seq = seq;
        self.changed().await;
        Ok(())
    }

    /// Counts a change and snapshots when enough have piled up: at least
    /// `persist.snapshot_every`, and more as the book grows, so snapshot writes stay a
    /// bounded fraction of the work.
    async fn changed(&mut self) {
        self.changes += 1;
        let due = self
            .ctx
            .settings
            .snapshot_every
            .max(self.book.size_hint() as u64 / 8);
        if self.changes < due {
            return;
        }
        match self
            .ctx
            .journal
            .snapshot(&self.key, self.seq, &self.book, Compaction::Delete)
            .await
        {
            Ok(()) => {
                self.snapshot_seq = self.seq;
                self.changes = 0;
                metrics::counter!(m::SNAPSHOTS, "kind" => KIND).increment(1);
            }
            Err(e) => tracing::warn!("patrol book snapshot not written: {e}"),
        }
    }

    /// Decides a ledger command, journals its events and applies them. A replayed request
    /// returns its first event without writing anything.
    async fn ledger(&mut self, command: LedgerCommand) -> Result<LedgerEvent, Rejection> {
        match self
            .book
            .ledger
            .handle(&command, &self.ctx.settings.award)
            .map_err(ledger_rejection)?
        {
            Decision::Replayed(event) => Ok(event),
            Decision::Apply(events) => {
                let mut last = None;
                for event in events {
                    self.record(BookEvent::Ledger(event.clone())).await?;
                    last = Some(event);
                }
                last.ok_or_else(|| Rejection::internal("the ledger decided nothing"))
            }
        }
    }

    async fn connect(
        &mut self,
        connection_id: String,
        officer: String,
        citizen: String,
        precinct: String,
        at_ms: i64,
    ) -> Result<(Connection, Connection), Rejection> {
        let event = self
            .ledger(LedgerCommand::Connect {
                connection_id,
                officer,
                citizen,
                precinct,
                at_ms,
            })
            .await?;
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
        metrics::counter!(m::PATROL_CONNECTIONS).increment(1);
        let officer_name = self.book.display_name(&officer);
        let citizen_name = self.book.display_name(&citizen);
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
            if let Some(to) = self.book.email(user) {
                mails.push((
                    sequence,
                    user.to_string(),
                    MailMessage {
                        to,
                        subject: format!("Thank you for connecting with {other}"),
                        body: format!(
                            "Hello {name},\n\nthank you for connecting with {other}. \
                             This connection earned you {points} points.\n\n\
                             Connection {connection_id}.\n"
                        ),
                    },
                ));
            }
        }
        self.submit_mails(format!("patrol-thanks.{connection_id}"), at_ms, mails);
        Ok((for_officer, for_citizen))
    }

    /// Hands mails to mission control without waiting: the mail domain makes them durable
    /// jobs, and the same correlation and sequence never send twice.
    fn submit_mails(
        &self,
        correlation: String,
        at_ms: i64,
        mails: Vec<(u64, String, MailMessage)>,
    ) {
        for (sequence, contact, message) in mails {
            let mail = self.ctx.mail.clone();
            let request = MailRequest {
                correlation: correlation.clone(),
                sequence,
                sent_at_ms: at_ms,
                messages: vec![EnvelopeMessage {
                    message,
                    contact: Some(contact),
                }],
            };
            tokio::spawn(async move {
                if let Err(e) = mail.submit(request).await {
                    tracing::warn!("patrol mail not submitted: {e}");
                }
            });
        }
    }

    async fn redeem(
        &mut self,
        request_id: String,
        user: String,
        offer_id: String,
        at_ms: i64,
    ) -> Result<Redemption, Rejection> {
        let Some(offer) = self.book.directory.offer(&offer_id).cloned() else {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!("no offer {offer_id}"),
            ));
        };
        let event = self
            .ledger(LedgerCommand::Redeem {
                request_id,
                user: user.clone(),
                offer_id,
                cost: offer.points,
                at_ms,
                precinct: None,
            })
            .await?;
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
        let code = voucher::issue(
            &self.ctx.voucher_key,
            &Voucher {
                serial: voucher_serial,
                offer_id: offer_id.clone(),
                points: cost,
                issued_day: super::ledger::utc_day(at_ms),
                holder: user.clone(),
            },
        );
        if let Some(to) = self.book.email(&user) {
            let message = MailMessage {
                to,
                subject: format!("Your voucher: {}", offer.title),
                body: format!(
                    "Hello {},\n\nhere is your voucher for {} at {}:\n\n    {code}\n\n\
                     It cost {cost} points (request {request_id}).\n",
                    self.book.display_name(&user),
                    offer.title,
                    offer.retailer
                ),
            };
            self.submit_mails(
                format!("patrol-voucher.{voucher_serial}"),
                at_ms,
                vec![(1, user.clone(), message)],
            );
        }
        Ok(Redemption {
            voucher_code: code,
            points: cost,
            balance: self.book.ledger.balance(&user),
        })
    }

    async fn donate(
        &mut self,
        request_id: String,
        user: String,
        charity_id: String,
        points: u64,
        at_ms: i64,
    ) -> Result<(u64, u64), Rejection> {
        if self.book.directory.charity(&charity_id).is_none() {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!("no charity {charity_id}"),
            ));
        }
        let event = self
            .ledger(LedgerCommand::Donate {
                request_id,
                user: user.clone(),
                charity_id,
                points,
                at_ms,
            })
            .await?;
        let LedgerEvent::Donated { points, .. } = event else {
            return Err(Rejection::new(
                ErrorCode::Conflict,
                "that request id was used for something else",
            ));
        };
        Ok((points, self.book.ledger.balance(&user)))
    }

    async fn send_message(
        &mut self,
        from: String,
        to: String,
        request_id: String,
        text: String,
        at_ms: i64,
    ) -> Result<Sent, Rejection> {
        crate::ids::validate_id("request_id", &request_id)?;
        crate::ids::validate_id("to", &to)?;
        match self.book.plan_message(
            &from,
            &to,
            &request_id,
            &text,
            self.ctx.settings.max_message_chars,
        )? {
            MessagePlan::Replayed { pair, seq } => {
                if self.storing.contains(&(from, request_id)) {
                    return Err(Rejection::new(
                        ErrorCode::Unavailable,
                        "this message is still being stored; retry",
                    ));
                }
                self.read_message(&pair, seq).map(Sent::Replayed)
            }
            MessagePlan::Store { pair, seq } => {
                let message = StoredMessage {
                    from: from.clone(),
                    to: to.clone(),
                    seq,
                    at_ms,
                    text,
                };
                let key = ActorKey::new(CONVERSATION_KIND, &pair);
                let record = MessageRecord {
                    request_id: request_id.clone(),
                    message: message.clone(),
                };
                // Queued in order but not awaited here: concurrent senders share flushes.
                let durable = self
                    .ctx
                    .journal
                    .enqueue(&key, seq, &[record])
                    .await
                    .map_err(|e| {
                        tracing::error!(%key, seq, "journal append failed: {e}");
                        Rejection::new(ErrorCode::Unavailable, RETRY)
                    })?;
                self.book.message_stored(&pair, seq, &from, &request_id);
                self.storing.insert((from, request_id));
                self.changed().await;
                Ok(Sent::Queued { message, durable })
            }
        }
    }

    fn read_message(&self, pair: &str, seq: u64) -> Result<StoredMessage, Rejection> {
        let key = ActorKey::new(CONVERSATION_KIND, pair);
        self.ctx
            .journal
            .page_before::<MessageRecord>(&key, Some(seq + 1), 1)
            .map_err(|e| Rejection::internal(format!("conversation {pair}: {e}")))?
            .into_iter()
            .find(|(found, _)| *found == seq)
            .map(|(_, record)| record.message)
            .ok_or_else(|| Rejection::internal(format!("message {seq} of {pair} is missing")))
    }

    fn undelivered(&self, user: &str) -> Result<Vec<StoredMessage>, Rejection> {
        let mut messages = Vec::new();
        for (pair, delivered, last) in self.book.undelivered(user) {
            let key = ActorKey::new(CONVERSATION_KIND, &pair);
            let wanted = usize::try_from(last - delivered).unwrap_or(usize::MAX);
            let mut page = self
                .ctx
                .journal
                .page_before::<MessageRecord>(&key, Some(last + 1), wanted)
                .map_err(|e| Rejection::internal(format!("conversation {pair}: {e}")))?;
            page.reverse();
            messages.extend(
                page.into_iter()
                    .map(|(seq, record)| (seq, record.message))
                    .filter(|(seq, m)| *seq > delivered && m.to == user)
                    .map(|(_, m)| m),
            );
        }
        Ok(messages)
    }
}

impl Actor for BookActor {
    type Msg = BookMsg;
    type State = BookState;
    type Arguments = Arc<PatrolContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<BookMsg>,
        ctx: Arc<PatrolContext>,
    ) -> Result<BookState, ActorProcessingErr> {
        let key = ActorKey::new(KIND, "book");
        let restored = ctx
            .journal
            .load::<Book, BookEvent>(&key)?
            .fold(|book, event| book.apply(event));
        let mut book = restored.state;
        // Messages are not book events: those stored after the book's snapshot are replayed
        // from their conversations, which also rebuilds the senders' idempotency windows.
        for conversation in ctx.journal.actors(CONVERSATION_KIND)? {
            let pair = conversation.id();
            let known = book.last_seq(pair);
            let last = ctx.journal.last_seq(&conversation)?;
            if last <= known {
                continue;
            }
            let missing = usize::try_from(last - known).unwrap_or(usize::MAX);
            let mut newer =
                ctx.journal
                    .page_before::<MessageRecord>(&conversation, Some(last + 1), missing)?;
            newer.reverse();
            for (seq, record) in newer {
                book.message_stored(pair, seq, &record.message.from, &record.request_id);
            }
        }
        Ok(BookState {
            book,
            ctx,
            key,
            seq: restored.last_seq,
            snapshot_seq: restored.snapshot_seq,
            changes: restored.last_seq - restored.snapshot_seq,
            storing: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BookMsg>,
        message: BookMsg,
        st: &mut BookState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BookMsg::Officer { id, reply } => {
                let card = st.book.directory.officer(&id).map(|o| OfficerCard {
                    display_name: o.display_name.clone(),
                    precinct: o.precinct.clone(),
                });
                let _ = reply.send(card);
            }
            BookMsg::DisplayName { user, reply } => {
                let _ = reply.send(st.book.display_name(&user));
            }
            BookMsg::SetProfile {
                user,
                display_name,
                email,
                reply,
            } => {
                let outcome = match profile(display_name, email) {
                    Ok(profile) => st.record(BookEvent::ProfileSet { user, profile }).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(outcome);
            }
            BookMsg::Import { rows, reply } => {
                let written = rows.len() as u64;
                let kind = rows.kind();
                let outcome = st.record(BookEvent::Imported(rows)).await.map(|()| {
                    let counts = st.book.directory.counts();
                    let total = match kind {
                        ImportKind::Officers => counts.officers,
                        ImportKind::Offers => counts.offers,
                        ImportKind::Charities => counts.charities,
                    };
                    (written, total)
                });
                let _ = reply.send(outcome);
            }
            BookMsg::Connect {
                connection_id,
                officer,
                citizen,
                precinct,
                at_ms,
                reply,
            } => {
                let outcome = st
                    .connect(connection_id, officer, citizen, precinct, at_ms)
                    .await;
                let _ = reply.send(outcome);
            }
            BookMsg::Balance { user, reply } => {
                let _ = reply.send(st.book.ledger.balance(&user));
            }
            BookMsg::History {
                user,
                before,
                limit,
                reply,
            } => {
                let _ = reply.send(st.book.ledger.history(&user, before, limit));
            }
            BookMsg::Offers { reply } => {
                let _ = reply.send(st.book.directory.offers().cloned().collect());
            }
            BookMsg::Charities { reply } => {
                let _ = reply.send(st.book.directory.charities().cloned().collect());
            }
            BookMsg::Redeem {
                request_id,
                user,
                offer_id,
                at_ms,
                reply,
            } => {
                let _ = reply.send(st.redeem(request_id, user, offer_id, at_ms).await);
            }
            BookMsg::Donate {
                request_id,
                user,
                charity_id,
                points,
                at_ms,
                reply,
            } => {
                let _ = reply.send(st.donate(request_id, user, charity_id, points, at_ms).await);
            }
            BookMsg::Report {
                from_day,
                to_day,
                reply,
            } => {
                let _ = reply.send(st.book.ledger.report(from_day, to_day));
            }
            BookMsg::SendMessage {
                from,
                to,
                request_id,
                text,
                at_ms,
                reply,
            } => match st
                .send_message(from, to, request_id.clone(), text, at_ms)
                .await
            {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(Sent::Replayed(message)) => {
                    let _ = reply.send(Ok(message));
                }
                Ok(Sent::Queued { message, durable }) => {
                    let ctx = st.ctx.clone();
                    tokio::spawn(async move {
                        let stored = match durable.wait().await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::error!(seq = message.seq, "message not stored: {e}");
                                false
                            }
                        };
                        let _ = myself.cast(BookMsg::Settled {
                            from: message.from.clone(),
                            request_id,
                            stored,
                        });
                        if stored {
                            // The recipient's session confirms with `Delivered` once queued.
                            ctx.notify(&message.to, Notice::DirectMessage(message.clone()));
                            let _ = reply.send(Ok(message));
                        } else {
                            let _ = reply.send(Err(Rejection::new(ErrorCode::Unavailable, RETRY)));
                        }
                    });
                }
            },
            BookMsg::Settled {
                from,
                request_id,
                stored,
            } => {
                if !stored {
                    st.book.forget_send(&from, &request_id);
                }
                st.storing.remove(&(from, request_id));
            }
            BookMsg::Delivered { user, pair, seq } => st.book.delivered(&user, &pair, seq),
            BookMsg::Undelivered { user, reply } => {
                let _ = reply.send(st.undelivered(&user));
            }
        }
        Ok(())
    }
}

/// Validates a profile from a client.
fn profile(display_name: String, email: Option<String>) -> Result<Profile, Rejection> {
    let display_name = validate_display_name(&display_name)?;
    let email = match email {
        None => None,
        Some(address) => {
            let address = address.trim().to_owned();
            crate::ids::validate_email("email", &address)?;
            Some(address)
        }
    };
    Ok(Profile {
        display_name,
        email,
    })
}
