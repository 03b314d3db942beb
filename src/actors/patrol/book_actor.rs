//! The book actor: the one writer of the patrol book. It turns messages into commands of
//! the book's rules ([`super::book_rules`]) and runs them through the journaled shell
//! ([`Journaled`]: decide, journal and wait for the flush, apply, snapshot now and then), and
//! only then answers and submits the mails the rules decided; so every acknowledged point,
//! voucher, donation, profile and message survives a crash.
//!
//! Messages are journaled under their conversation's key (`dm/<a>~<b>`); the book's own
//! events under `patrol/book`. A message is numbered and queued for the journal in order,
//! but the book does not wait for its flush before taking the next request: a task answers
//! the sender (and pushes to the recipient) once it is durable, so many conversations share
//! one group commit instead of one flush each. Messages are not book events, so their
//! numbering is recovered from the conversations' journals, not from the book's.

use super::book::{Book, MessagePlan};
use super::book_rules::{BookCommand, BookContext, BookMail, BookOutcome};
use super::context::PatrolContext;
use super::import::ImportKind;
use super::ledger::{ConnectRequest, DonateRequest};
use super::msg::OfficerCard;
use super::msg::{BookMsg, Redemption};
use super::notice::{Connection, MessageRecord, Notice, StoredMessage};
use crate::actors::journaled::{Journaled, SnapshotPolicy};
use crate::actors::mail::{EnvelopeMessage, MailRequest};
use crate::error::{ErrorCode, Rejection};
use crate::metrics as m;
use crate::persist::{ActorKey, Compaction, Durable, PersistError};
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
    /// The book, journaled under `patrol/book`: its events go through the one journaled
    /// shell; its conversation bookkeeping changes beside them (`Journaled::amend`).
    book: Journaled<Book>,
    /// Shared patrol state.
    ctx: Arc<PatrolContext>,
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

impl BookState {
    /// Decides `command` with the book's rules, journals and applies its events (the
    /// journaled shell), then submits the mails it decided: only once they are durable, so
    /// no mail tells of something a crash could undo.
    async fn execute(&mut self, command: BookCommand) -> Result<BookOutcome, Rejection> {
        let context = BookContext {
            award: &self.ctx.settings.award,
            voucher_key: &self.ctx.voucher_key,
        };
        let decision = self.book.execute(command, context, RETRY).await?;
        self.submit_mails(decision.outcome.mails());
        Ok(decision.outcome)
    }

    /// Hands mails to mission control without waiting: the mail domain makes them durable
    /// jobs, and the same correlation and sequence never send twice.
    fn submit_mails(&self, mails: &[BookMail]) {
        for mail in mails {
            let domain = self.ctx.mail.clone();
            let request = MailRequest {
                correlation: mail.correlation.clone(),
                sequence: mail.sequence,
                sent_at_ms: mail.sent_at_ms,
                messages: vec![EnvelopeMessage {
                    message: mail.message.clone(),
                    contact: Some(mail.contact.clone()),
                }],
            };
            tokio::spawn(async move {
                if let Err(e) = domain.submit(request).await {
                    tracing::warn!("patrol mail not submitted: {e}");
                }
            });
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
        let command = BookCommand::Connect(ConnectRequest {
            connection_id,
            officer,
            citizen,
            precinct,
            at_ms,
        });
        let BookOutcome::Connected {
            for_officer,
            for_citizen,
            ..
        } = self.execute(command).await?
        else {
            return Err(Rejection::internal("a connection recorded something else"));
        };
        metrics::counter!(m::PATROL_CONNECTIONS).increment(1);
        Ok((for_officer, for_citizen))
    }

    async fn redeem(
        &mut self,
        request_id: String,
        user: String,
        offer_id: String,
        at_ms: i64,
    ) -> Result<Redemption, Rejection> {
        let command = BookCommand::Redeem {
            request_id,
            user,
            offer_id,
            at_ms,
        };
        match self.execute(command).await? {
            BookOutcome::Redeemed { redemption, .. } => Ok(redemption),
            _ => Err(Rejection::internal("a redemption recorded something else")),
        }
    }

    async fn donate(
        &mut self,
        request_id: String,
        user: String,
        charity_id: String,
        points: u64,
        at_ms: i64,
    ) -> Result<(u64, u64), Rejection> {
        let command = BookCommand::Donate(DonateRequest {
            request_id,
            user,
            charity_id,
            points,
            at_ms,
        });
        match self.execute(command).await? {
            BookOutcome::Donated { points, balance } => Ok((points, balance)),
            _ => Err(Rejection::internal("a donation recorded something else")),
        }
    }

    async fn import(&mut self, rows: super::import::ImportRows) -> Result<(u64, u64), Rejection> {
        let BookOutcome::Imported { written, kind } =
            self.execute(BookCommand::Import(rows)).await?
        else {
            return Err(Rejection::internal("an import recorded something else"));
        };
        let counts = self.book.state().directory.counts();
        let total = match kind {
            ImportKind::Officers => counts.officers,
            ImportKind::Offers => counts.offers,
            ImportKind::Charities => counts.charities,
        };
        Ok((written, total))
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
        match self.book.state().plan_message(
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
                self.book
                    .amend(|book| book.message_stored(&pair, seq, &from, &request_id));
                self.storing.insert((from, request_id));
                // Messages count towards the book's snapshots, so recovery replays a bounded
                // tail of the conversations and delivery cursors stay recent.
                self.book.snapshot_if_due().await;
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
        for (pair, delivered, last) in self.book.state().undelivered(user) {
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
        let mut book = Journaled::<Book>::recover(
            ctx.journal.clone(),
            ActorKey::new(KIND, "book"),
            SnapshotPolicy {
                every: ctx.settings.snapshot_every,
                compaction: Compaction::Delete,
            },
        )?;
        // Messages are not book events: those stored after the book's snapshot are replayed
        // from their conversations, which also rebuilds the senders' idempotency windows.
        for conversation in ctx.journal.actors(CONVERSATION_KIND)? {
            let pair = conversation.id();
            let known = book.state().last_seq(pair);
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
                book.amend(|b| {
                    b.message_stored(pair, seq, &record.message.from, &record.request_id)
                });
            }
        }
        Ok(BookState {
            book,
            ctx,
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
                let card = st.book.state().directory.officer(&id).map(|o| OfficerCard {
                    display_name: o.display_name.clone(),
                    precinct: o.precinct.clone(),
                });
                let _ = reply.send(card);
            }
            BookMsg::DisplayName { user, reply } => {
                let _ = reply.send(st.book.state().display_name(&user));
            }
            BookMsg::SetProfile {
                user,
                display_name,
                email,
                reply,
            } => {
                let command = BookCommand::SetProfile {
                    user,
                    display_name,
                    email,
                };
                let _ = reply.send(st.execute(command).await.map(|_| ()));
            }
            BookMsg::Import { rows, reply } => {
                let _ = reply.send(st.import(rows).await);
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
                let _ = reply.send(st.book.state().ledger.balance(&user));
            }
            BookMsg::History {
                user,
                before,
                limit,
                reply,
            } => {
                let _ = reply.send(st.book.state().ledger.history(&user, before, limit));
            }
            BookMsg::Offers { reply } => {
                let _ = reply.send(st.book.state().directory.offers().cloned().collect());
            }
            BookMsg::Charities { reply } => {
                let _ = reply.send(st.book.state().directory.charities().cloned().collect());
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
                let _ = reply.send(st.book.state().ledger.report(from_day, to_day));
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
                        let (stored, fenced) = match durable.wait().await {
                            Ok(()) => (true, false),
                            Err(e) => {
                                tracing::error!(seq = message.seq, "message not stored: {e}");
                                (false, matches!(e, PersistError::Fenced { .. }))
                            }
                        };
                        let _ = myself.cast(BookMsg::Settled {
                            from: message.from.clone(),
                            request_id,
                            stored,
                            fenced,
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
                fenced,
            } => {
                if fenced {
                    // Another node wrote this conversation: the numbering is stale.
                    return Err("a conversation's journal moved on without this node; \
                                restarting the book from the journals"
                        .into());
                }
                if !stored {
                    st.book.amend(|book| book.forget_send(&from, &request_id));
                }
                st.storing.remove(&(from, request_id));
            }
            BookMsg::Delivered { user, pair, seq } => {
                st.book.amend(|book| book.delivered(&user, &pair, seq));
            }
            BookMsg::Undelivered { user, reply } => {
                let _ = reply.send(st.undelivered(&user));
            }
        }
        // Another node wrote the book since this state was read (cluster mode): fail, and
        // the supervisor starts the book again from the journal, so the next request is
        // decided on the state every node agrees on.
        if st.book.fenced() {
            return Err("the book's journal moved on without this node; restarting from it".into());
        }
        Ok(())
    }
}
