//! Asking an actor and waiting for its answer, the one way every facade does it: a call
//! that times out, mapped to `unavailable` so the client knows retrying is safe.

use crate::error::{ErrorCode, Rejection};
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use std::time::Duration;

/// Why an asked actor gave no answer, for the callers whose advice to the client depends on
/// it (a command that timed out may still take effect; one sent to a stopped actor did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// It did not answer within the timeout: what was asked may still happen.
    TimedOut,
    /// It was stopped or dropped the question (restarting): nothing happened.
    Gone,
}

/// Sends `question` to `actor` and waits up to `timeout` for the answer; an actor that is
/// gone or too slow becomes `unavailable` naming `who`.
pub async fn ask<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    question: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
    who: &str,
) -> Result<T, Rejection> {
    ask_or(actor, question, timeout, |_| unanswered(who, "retry")).await
}

/// Like [`ask`], but the rejection for silence is `silenced`'s, for callers that advise the
/// client more precisely than "retry" (resend, duplicates are ignored; or it may have
/// happened).
pub async fn ask_or<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    question: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
    silenced: impl FnOnce(Silence) -> Rejection,
) -> Result<T, Rejection> {
    match actor.call(question, Some(timeout)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => Err(silenced(Silence::TimedOut)),
        Ok(CallResult::SenderError) | Err(_) => Err(silenced(Silence::Gone)),
    }
}

/// `unavailable`: `who` did not answer, and what the client should do about it (`advice`).
pub fn unanswered(who: &str, advice: &str) -> Rejection {
    Rejection::new(
        ErrorCode::Unavailable,
        format!("{who} did not answer; {advice}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    /// Answers, keeps or drops each question, so every kind of silence can be provoked.
    struct Oracle;

    enum Question {
        Answer(RpcReplyPort<u32>),
        Keep(RpcReplyPort<u32>),
        Drop(RpcReplyPort<u32>),
    }

    impl Actor for Oracle {
        type Msg = Question;
        type State = Vec<RpcReplyPort<u32>>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Question>,
            _args: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(Vec::new())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Question>,
            question: Question,
            kept: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match question {
                Question::Answer(reply) => drop(reply.send(42)),
                Question::Keep(reply) => kept.push(reply),
                Question::Drop(reply) => drop(reply),
            }
            Ok(())
        }
    }

    const SHORT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn silence_is_unavailable_and_says_whether_it_timed_out() {
        let (oracle, handle) = Actor::spawn(None, Oracle, ()).await.unwrap();
        assert_eq!(
            ask(&oracle, Question::Answer, SHORT, "the oracle").await,
            Ok(42)
        );
        let silence = |q: fn(RpcReplyPort<u32>) -> Question| {
            ask_or(&oracle, q, SHORT, |s| {
                unanswered(&format!("{s:?}"), "retry")
            })
        };
        let timed_out = silence(Question::Keep).await.unwrap_err();
        assert_eq!(timed_out.code, ErrorCode::Unavailable);
        assert_eq!(timed_out.message, "TimedOut did not answer; retry");
        assert_eq!(
            silence(Question::Drop).await.unwrap_err().message,
            "Gone did not answer; retry"
        );
        oracle.stop(None);
        handle.await.unwrap();
        let stopped = ask(&oracle, Question::Answer, SHORT, "the oracle").await;
        assert_eq!(
            stopped.unwrap_err().message,
            "the oracle did not answer; retry"
        );
    }
}
