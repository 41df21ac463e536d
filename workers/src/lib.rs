//! `ambit-workers`: the data path's threads. Each runs a single-threaded Tokio runtime of
//! its own, and each unit of work — a pod in ztunnel, a downstream connection in the
//! waypoint — is served by one of them, with every task it spawns (Tokio's `spawn` stays
//! on the runtime it is called from). So the tasks of one connection never wake each
//! other across threads: with a shared work-stealing runtime, nearly every message
//! relayed cost a futex wake-up of an idle worker and a context switch (measured with
//! `perf trace` on `bench l4`: ~1.75 futex calls per request on each ztunnel, none with
//! one thread). Several units still use several cores. The main thread keeps the control
//! plane (config push, certificates, admin endpoints, accepting connections).
//!
//! State that a connection's tasks share with later connections (pooled upstream
//! connections) must stay on one thread too: key it by [`current`], the worker the
//! caller runs on.

use std::{
    cell::Cell,
    future::Future,
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    net::TcpStream,
    runtime::{Builder, Handle},
    task::JoinHandle,
};

/// The data-path threads.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    runtime: Handle,
    /// Units of work it serves now.
    load: Arc<AtomicUsize>,
}

/// Which worker thread: unique in the process, across every [`Workers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId(usize);

thread_local! {
    static CURRENT: Cell<Option<WorkerId>> = const { Cell::new(None) };
}

/// The worker this thread is, if it is one.
#[must_use]
pub fn current() -> Option<WorkerId> {
    CURRENT.get()
}

/// A unit of work's place on a worker: its runtime, held (and counted) until dropped.
#[derive(Debug)]
pub struct Assignment {
    pub runtime: Handle,
    load: Arc<AtomicUsize>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` threads named `name-<index>` (`0`: one per CPU), each running
    /// its runtime until the process exits.
    ///
    /// # Errors
    /// A runtime or thread that could not be created.
    pub fn start(count: usize, name: &str) -> io::Result<Self> {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            count => count,
        };
        let workers = (0..count)
            .map(|index| {
                let runtime = Builder::new_current_thread().enable_all().build()?;
                let handle = runtime.handle().clone();
                let id = WorkerId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
                std::thread::Builder::new()
                    .name(format!("{name}-{index}"))
                    .spawn(move || {
                        CURRENT.set(Some(id));
                        runtime.block_on(std::future::pending::<()>());
                    })?;
                Ok(Worker {
                    runtime: handle,
                    load: Arc::default(),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { workers })
    }

    /// The worker serving the least, for one more unit of work.
    #[must_use]
    pub fn assign(&self) -> Assignment {
        let worker = self
            .workers
            .iter()
            .min_by_key(|worker| worker.load.load(Ordering::Relaxed))
            .expect("Workers::start starts at least one");
        worker.load.fetch_add(1, Ordering::Relaxed);
        Assignment {
            runtime: worker.runtime.clone(),
            load: Arc::clone(&worker.load),
        }
    }

    /// Serves an accepted connection on the least busy worker: `stream` moves to that
    /// worker's reactor and `serve` runs there, counted until it returns.
    ///
    /// # Errors
    /// The stream could not be moved (it is closed then).
    pub fn spawn_connection<F, Fut>(
        &self,
        stream: TcpStream,
        serve: F,
    ) -> io::Result<JoinHandle<Fut::Output>>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send,
    {
        let stream = stream.into_std()?;
        let assignment = self.assign();
        let runtime = assignment.runtime.clone();
        let stream = {
            let _on_worker = runtime.enter();
            TcpStream::from_std(stream)?
        };
        Ok(runtime.spawn(async move {
            let _held = assignment;
            serve(stream).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn thread_of(assignment: &Assignment) -> (std::thread::ThreadId, Option<WorkerId>) {
        assignment
            .runtime
            .block_on(async {
                tokio::spawn(async { (std::thread::current().id(), current()) }).await
            })
            .unwrap()
    }

    #[test]
    fn work_goes_to_the_least_busy_worker_and_frees_it_when_dropped() {
        let workers = Workers::start(2, "test-worker").unwrap();
        let first = workers.assign();
        let second = workers.assign();
        assert_ne!(thread_of(&first), thread_of(&second));
        let second_thread = thread_of(&second);
        assert!(second_thread.1.is_some(), "a worker knows it is one");
        drop(second);
        assert_eq!(thread_of(&workers.assign()), second_thread);
        assert_eq!(current(), None, "the test's thread is no worker");
    }

    #[tokio::test]
    async fn a_connection_is_served_on_a_worker() {
        let workers = Workers::start(1, "test-conn").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let served = workers
            .spawn_connection(accepted, |mut stream| async move {
                stream.write_all(b"hi").await.unwrap();
                current()
            })
            .unwrap();
        let mut greeting = [0; 2];
        client.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"hi");
        assert!(served.await.unwrap().is_some());
    }
}
