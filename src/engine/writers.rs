//! The runtime spectators' socket writers run on: a second tokio runtime whose threads run
//! at a lower scheduling priority than the rest of the server.
//!
//! A race tick wakes every spectator socket's writer at once: 10,000 of them, each a few
//! tens of microseconds of mostly kernel work. On the server's one runtime a racer's fix
//! queued behind that wave waited for it, so fix acknowledgements reached seconds under a
//! large audience, and intake and fan-out competed with nothing to say which mattered more.
//! Writers here run on their own threads, niced by `ws.writer_nice`: while the machine is
//! busy the kernel gives intake, the actors and the journal their share first, and the
//! writers the rest; when it is not, nothing changes. The sockets' I/O stays registered with
//! the main runtime's driver, which wakes writer tasks here like any other.

use std::future::Future;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// The writers' runtime, shut down (without waiting) when dropped.
pub struct WriterRuntime {
    /// The runtime; taken when dropped.
    runtime: Option<Runtime>,
    /// Where writer tasks are spawned.
    handle: Handle,
}

impl WriterRuntime {
    /// A runtime of `threads` worker threads named `peloton-writer`, each lowering its own
    /// priority by `nice` as it starts (10 gives a thread about a tenth of the weight of a
    /// normal one under CPU contention; a failure to lower it is logged once per thread and
    /// harmless).
    pub fn start(threads: usize, nice: u32) -> std::io::Result<WriterRuntime> {
        let nice = i32::try_from(nice.min(19)).unwrap_or(19);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("peloton-writer")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(WriterRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `task` on the writers' threads.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for WriterRuntime {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which panics inside another runtime
        // (where the engine is dropped); the writers' sockets are closed by then anyway.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's scheduling priority by `nice`.
fn lower_priority(nice: i32) {
    // SAFETY: getpriority and setpriority only read their integer arguments; on Linux,
    // PRIO_PROCESS with who = 0 names the calling thread alone (nice is a per-thread
    // attribute there). Relative to the thread's nice value, so a server started niced
    // keeps its writers below itself.
    let failed = unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, current.saturating_add(nice))
    } != 0;
    if failed {
        tracing::warn!(
            "cannot lower a socket writer thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
