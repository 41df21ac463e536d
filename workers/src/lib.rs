//! The data path's threads: each runs a single-threaded Tokio runtime of its own, and
//! each pod is served by one of them — its listeners, every connection they accept and
//! the HBONE connections those open (Tokio's `spawn` stays on the runtime it is called
//! from). So the tasks of one connection never wake each other across threads: with a
//! shared work-stealing runtime, nearly every message relayed cost a futex wake-up of an
//! idle worker and a context switch (measured with `perf trace` on `bench l4`: ~1.75
//! futex calls per request on each ztunnel, none with one thread). Several pods still
//! use several cores. The main thread keeps the control plane (the agent's hand-off, the
//! config push, certificates, the admin endpoints).

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::runtime::{Builder, Handle};

/// The data-path threads.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    runtime: Handle,
    /// Pods it serves now.
    pods: Arc<AtomicUsize>,
}

/// A pod's place on a worker: its runtime, held (and counted) until the pod is dropped.
#[derive(Debug)]
pub struct Assignment {
    pub runtime: Handle,
    pods: Arc<AtomicUsize>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.pods.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` threads (at least one), each running its runtime until the
    /// process exits.
    ///
    /// # Errors
    /// A runtime or thread that could not be created.
    pub fn start(count: usize) -> io::Result<Self> {
        let workers = (0..count.max(1))
            .map(|index| {
                let runtime = Builder::new_current_thread().enable_all().build()?;
                let handle = runtime.handle().clone();
                std::thread::Builder::new()
                    .name(format!("ztunnel-data-{index}"))
                    .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
                Ok(Worker {
                    runtime: handle,
                    pods: Arc::default(),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { workers })
    }

    /// The worker serving the fewest pods, for one more.
    #[must_use]
    pub fn assign(&self) -> Assignment {
        let worker = self
            .workers
            .iter()
            .min_by_key(|worker| worker.pods.load(Ordering::Relaxed))
            .expect("Workers::start starts at least one");
        worker.pods.fetch_add(1, Ordering::Relaxed);
        Assignment {
            runtime: worker.runtime.clone(),
            pods: Arc::clone(&worker.pods),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_go_to_the_least_busy_worker_and_free_it_when_dropped() {
        let workers = Workers::start(2).unwrap();
        let first = workers.assign();
        let second = workers.assign();
        let thread_of = |assignment: &Assignment| {
            assignment
                .runtime
                .block_on(async { tokio::spawn(async { std::thread::current().id() }).await })
                .unwrap()
        };
        assert_ne!(thread_of(&first), thread_of(&second));
        let second_thread = thread_of(&second);
        drop(second);
        assert_eq!(thread_of(&workers.assign()), second_thread);
    }
}
