//! Asking an actor and waiting for its answer, the one way every facade does it: a call
//! that times out, mapped to `unavailable` so the client knows retrying is safe.

use crate::error::{ErrorCode, Rejection};
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use std::time::Duration;

/// Sends `question` to `actor` and waits up to `timeout` for the answer; an actor that is
/// gone or too slow becomes `unavailable` naming `who`.
pub async fn ask<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    question: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
    who: &str,
) -> Result<T, Rejection> {
    match actor.call(question, Some(timeout)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        _ => Err(Rejection::new(
            ErrorCode::Unavailable,
            format!("{who} did not answer; retry"),
        )),
    }
}
