//! Which worker thread runs the current task, and state kept per worker.
//!
//! With the per-core scheduler (`[runtime] scheduler`, the default) each worker is one
//! thread running its own single-threaded tokio runtime, accepting on its own
//! `SO_REUSEPORT` socket (`server.rs`): a connection, its requests and the upstream
//! connections they use stay on that thread. What would otherwise be shared between
//! workers — the idle upstream connections of an endpoint, say — is kept in a
//! [`PerWorker`], one slot per worker, so a request never takes a connection whose
//! driver task lives on another thread (which would wake that thread for every read).
//! Outside a worker (the control thread: admin API, health probes, reloads; or every
//! thread of the work-stealing scheduler) the index is 0.

pub mod deadlines;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Workers of the per-core scheduler; 1 with the work-stealing one (its threads share
/// every slot). Set once at start, before the first version is built.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The worker the current thread is (0 outside the per-core workers).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many slots a [`PerWorker`] has.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Sets the number of per-core workers; called once, before anything is built.
pub fn set_count(n: usize) {
    COUNT.store(n.max(1), Ordering::Relaxed);
}

/// Marks the current thread as worker `i`; called first thing on each worker thread.
pub fn enter(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// One `T` per worker, each read by its own worker only (so without contention; the
/// slots are built once, when the owner is).
pub struct PerWorker<T> {
    slots: Box<[T]>,
}

impl<T> PerWorker<T> {
    /// [`count`] slots, each from `make`.
    pub fn new(make: impl FnMut() -> T) -> PerWorker<T> {
        PerWorker::with_count(count(), make)
    }

    /// `n` slots (at least one), each from `make`.
    pub fn with_count(n: usize, mut make: impl FnMut() -> T) -> PerWorker<T> {
        PerWorker {
            slots: (0..n.max(1)).map(|_| make()).collect(),
        }
    }

    /// The current worker's slot. A thread that is no worker of this set (the control
    /// thread, or a set built before the count was known) gets the first one.
    pub fn get(&self) -> &T {
        self.slots.get(index()).unwrap_or(&self.slots[0])
    }

    /// Every worker's slot.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_thread_reads_its_own_slot_and_others_the_first() {
        // Built with as many slots as the count at the time: this test sets none, so the
        // process-wide count may be anything another test left; build the set explicitly.
        let set = PerWorker {
            slots: vec![10, 11, 12].into_boxed_slice(),
        };
        assert_eq!(*set.get(), 10, "not a worker: the first slot");
        let seen: Vec<i32> = (0..3)
            .map(|i| {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        enter(i);
                        *set.get()
                    })
                    .join()
                    .expect("worker thread")
                })
            })
            .collect();
        assert_eq!(seen, vec![10, 11, 12]);
        let out_of_range = std::thread::scope(|s| {
            s.spawn(|| {
                enter(7);
                *set.get()
            })
            .join()
            .expect("worker thread")
        });
        assert_eq!(
            out_of_range, 10,
            "a worker index past the set falls back to the first slot"
        );
        assert_eq!(set.iter().count(), 3);
    }
}
