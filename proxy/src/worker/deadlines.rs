//! A worker's upstream deadlines: one list per worker thread, one timer for the list.
//!
//! A tokio `timeout` per request registers an entry in the runtime's timer wheel and
//! removes it again when the upstream answers first, which it nearly always does: about
//! 1.1k instructions a request (the timer driver's lock, the entry's state machine, the
//! wheel's slot lists, its processing when the driver parks). Here a request's deadline is
//! a slot in its worker's list (a push, a waker clone, a pop), and one task per worker
//! sleeps until the earliest deadline, wakes the requests that are due, and sleeps again.
//! With a route's one timeout, deadlines arrive in order and the task wakes about once a
//! timeout period, not once a request (nginx keeps its timers per worker the same way).
//!
//! Only a thread that runs [`drive`] has a list: the per-core workers start it. Elsewhere
//! (the control thread, the work-stealing scheduler's threads, a test's runtime)
//! [`within`] falls back to tokio's timer, so no deadline is ever left on a list that no
//! task watches.

use std::cell::RefCell;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    static LIST: RefCell<Option<List>> = const { RefCell::new(None) };
}

/// Runs `exchange` until it is done or `limit` has passed; `None` then.
pub async fn within<F: Future>(limit: Duration, exchange: F) -> Option<F::Output> {
    // A limit past the clock's range (there is always one) is tokio's to saturate.
    let Some(slot) = Instant::now().checked_add(limit).and_then(Slot::register) else {
        return tokio::time::timeout(limit, exchange).await.ok();
    };
    let mut exchange = std::pin::pin!(exchange);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match slot.expired(cx) {
            true => Poll::Ready(None),
            false => Poll::Pending,
        }
    })
    .await
}

/// Watches this thread's deadlines until the runtime stops; started once on each worker
/// thread, before it serves.
pub async fn drive() {
    LIST.with(|list| *list.borrow_mut() = Some(List::default()));
    // One `Sleep`, moved to each next deadline.
    let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut due = Vec::new();
    std::future::poll_fn(|cx| {
        loop {
            let next = with_list(|list| list.expire(Instant::now(), cx.waker(), &mut due)).flatten();
            // Woken outside the borrow: a waker may be anything.
            due.drain(..).for_each(Waker::wake);
            let Some(at) = next else {
                // Nothing to watch: the next registration wakes this task.
                return Poll::<()>::Pending;
            };
            sleep.as_mut().reset(tokio::time::Instant::from_std(at));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;
}

fn with_list<T>(f: impl FnOnce(&mut List) -> T) -> Option<T> {
    LIST.with(|list| list.borrow_mut().as_mut().map(f))
}

#[derive(Default)]
struct List {
    entries: Vec<Entry>,
    /// Indexes of `entries` no request holds.
    vacant: Vec<usize>,
    /// The driver's waker and when it is to wake (`None`: it waits for a registration).
    driver: Option<Waker>,
    wake_at: Option<Instant>,
}

struct Entry {
    deadline: Instant,
    /// The request's task, once it has waited.
    waker: Option<Waker>,
    expired: bool,
    held: bool,
}

impl List {
    fn insert(&mut self, deadline: Instant) -> usize {
        let entry = Entry {
            deadline,
            waker: None,
            expired: false,
            held: true,
        };
        let index = match self.vacant.pop() {
            Some(index) => {
                self.entries[index] = entry;
                index
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        // Earlier than the driver means to wake (or it waits for work): wake it to look.
        if self.wake_at.is_none_or(|at| deadline < at)
            && let Some(driver) = self.driver.take()
        {
            self.wake_at = Some(deadline);
            driver.wake();
        }
        index
    }

    fn remove(&mut self, index: usize) {
        let entry = &mut self.entries[index];
        entry.held = false;
        entry.waker = None;
        self.vacant.push(index);
    }

    /// Marks every held entry due at `now` expired (their wakers into `due`) and returns
    /// the earliest deadline still ahead, for the driver (whose waker is kept) to sleep to.
    fn expire(&mut self, now: Instant, driver: &Waker, due: &mut Vec<Waker>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for entry in self.entries.iter_mut().filter(|e| e.held && !e.expired) {
            if entry.deadline <= now {
                entry.expired = true;
                due.extend(entry.waker.take());
            } else if next.is_none_or(|at| entry.deadline < at) {
                next = Some(entry.deadline);
            }
        }
        // Nothing held: the list's memory goes back to the size of a quiet worker's.
        if self.vacant.len() == self.entries.len() {
            self.entries.clear();
            self.vacant.clear();
        }
        if !self.driver.as_ref().is_some_and(|w| w.will_wake(driver)) {
            self.driver = Some(driver.clone());
        }
        self.wake_at = next;
        next
    }
}

/// A request's entry in its worker's list, removed when the wait ends however it ends.
struct Slot(usize);

impl Slot {
    fn register(deadline: Instant) -> Option<Slot> {
        with_list(|list| Slot(list.insert(deadline)))
    }

    /// Whether the deadline has passed; if not, `cx`'s task is woken when it does.
    fn expired(&self, cx: &Context<'_>) -> bool {
        with_list(|list| {
            let entry = &mut list.entries[self.0];
            if !entry.expired && !entry.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                entry.waker = Some(cx.waker().clone());
            }
            entry.expired
        })
        // A slot exists only on a thread with a list, and a worker's futures stay on it.
        .unwrap_or(true)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        with_list(|list| list.remove(self.0));
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;

    fn held() -> usize {
        with_list(|list| list.entries.iter().filter(|e| e.held).count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn without_a_driver_the_wait_is_tokios_and_still_ends() {
        assert!(within(Duration::from_millis(20), pending::<()>()).await.is_none());
        assert_eq!(within(Duration::from_secs(5), async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_worker_list_ends_late_waits_and_frees_every_slot() {
        tokio::spawn(drive());
        tokio::task::yield_now().await;
        // An answer first: it is the answer, and the slot is gone.
        assert_eq!(within(Duration::from_secs(30), async { 1 }).await, Some(1));
        assert_eq!(held(), 0);
        // Several waits that never end, with different limits, registered longest first:
        // the driver, asleep until the 30 s one, is woken for each earlier deadline.
        let long = tokio::spawn(async { within(Duration::from_secs(30), pending::<()>()).await });
        tokio::task::yield_now().await;
        let waits = [80, 40, 10].map(|ms| within(Duration::from_millis(ms), pending::<()>()));
        let [a, b, c] = waits;
        // Were the driver not woken, they would end only with the 30 s deadline.
        let ended = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(a, b, c) }).await;
        let (a, b, c) = ended.expect("the driver woke for the earlier deadlines");
        assert!(a.is_none() && b.is_none() && c.is_none());
        // One wait still held (the 30 s one); the others left the list.
        assert_eq!(held(), 1);
        long.abort();
        let _ = long.await;
        assert_eq!(held(), 0, "a cancelled wait (a client gone) leaves the list");
    }

    #[tokio::test]
    async fn an_answer_that_comes_in_time_is_not_cut() {
        tokio::spawn(drive());
        tokio::task::yield_now().await;
        let answer = within(Duration::from_secs(10), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            "answer"
        });
        assert_eq!(answer.await, Some("answer"));
        // Many at once: all answered, all slots reused from the vacant list.
        let many = (0..100).map(|i| within(Duration::from_secs(10), async move { i }));
        let got: Vec<_> = futures_util::future::join_all(many).await;
        assert!(got.iter().enumerate().all(|(i, v)| *v == Some(i)));
        assert_eq!(held(), 0);
    }
}
