//! A torrent's command queue: a bounded many-to-one channel that costs one
//! small allocation while it is empty.
//!
//! A daemon holds one per torrent, ten thousand of them, nearly always
//! empty. `tokio::sync::mpsc` allocates its first block of slots and its
//! shared state up front (about 1.5 KiB a channel); this one is a mutex
//! around a `VecDeque` that allocates only while commands wait, and two
//! `Notify`s (about 150 bytes in all). The semantics are `mpsc`'s: `send`
//! waits while the queue is full and fails once the receiver is gone
//! (whatever was queued is dropped with it); `recv` gives `None` once every
//! sender is gone and the queue is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    /// The receiver is gone.
    closed: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    cap: usize,
    /// Something was queued, or the last sender left.
    to_receiver: Notify,
    /// A place freed up, or the receiver left.
    to_senders: Notify,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue half
        // changed (every change is one `VecDeque` call): go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bounded queue of at most `cap` items (at least 1).
pub(crate) fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            closed: false,
        }),
        cap: cap.max(1),
        to_receiver: Notify::new(),
        to_senders: Notify::new(),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

/// The receiver is gone; the item comes back.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub T);

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    Full(T),
    Closed(T),
}

pub(crate) struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut s = self.inner.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.inner.to_receiver.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, waiting for a place while the queue is full.
    pub async fn send(&self, item: T) -> Result<(), Closed<T>> {
        let mut item = item;
        loop {
            // Made before the check: a place freed after it still wakes
            // this sender (`notify_one` keeps a permit for it).
            let freed = self.inner.to_senders.notified();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(Closed(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            freed.await;
        }
    }

    /// Queues `item` if there is a place now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut s = self.inner.lock();
            if s.closed {
                return Err(TrySendError::Closed(item));
            }
            if s.queue.len() >= self.inner.cap {
                return Err(TrySendError::Full(item));
            }
            s.queue.push_back(item);
        }
        self.inner.to_receiver.notify_one();
        Ok(())
    }
}

pub(crate) struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and nothing is left.
    /// Cancel-safe: an item is taken out only by the poll that returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            let queued = self.inner.to_receiver.notified();
            {
                let mut s = self.inner.lock();
                if let Some(item) = s.queue.pop_front() {
                    // Commands are rare: give the room back once the
                    // queue is drained.
                    if s.queue.is_empty() {
                        s.queue = VecDeque::new();
                    }
                    drop(s);
                    self.inner.to_senders.notify_one();
                    return Some(item);
                }
                if s.senders == 0 {
                    return None;
                }
            }
            queued.await;
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut s = self.inner.lock();
            s.closed = true;
            std::mem::take(&mut s.queue)
        };
        // Dropped outside the lock (an item may own a connection).
        drop(left);
        self.inner.to_senders.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn items_come_in_order_and_none_after_the_last_sender() {
        let (tx, mut rx) = channel(4);
        let tx2 = tx.clone();
        tx.send(1).await.unwrap();
        tx2.send(2).await.unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(tx2);
        assert_eq!(timeout(BOUND, rx.recv()).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_senders_wait_not_fail() {
        let (tx, mut rx) = channel(2);
        tx.try_send(0).unwrap();
        tx.try_send(1).unwrap();
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        // Three senders push 100 each through a queue of two.
        let mut tasks = Vec::new();
        for k in 0..3 {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    tx.send(2 + k * 100 + i).await.unwrap();
                }
            }));
        }
        drop(tx);
        let mut got = Vec::new();
        let all = timeout(BOUND, async {
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
        })
        .await;
        assert!(all.is_ok(), "stuck after {} items", got.len());
        got.sort();
        assert_eq!(got, (0..302).collect::<Vec<_>>());
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_fail_once_the_receiver_is_gone() {
        let (tx, rx) = channel(1);
        let held = Arc::new(());
        tx.send(held.clone()).await.unwrap();
        // A sender waiting for a place is released by the receiver's end.
        let waiting = {
            let tx = tx.clone();
            let h = held.clone();
            tokio::spawn(async move { tx.send(h).await.is_err() })
        };
        drop(rx);
        assert!(timeout(BOUND, waiting).await.unwrap().unwrap());
        // What was queued went with the receiver.
        assert_eq!(Arc::strong_count(&held), 1);
        assert!(tx.send(held.clone()).await.is_err());
        assert!(matches!(tx.try_send(held), Err(TrySendError::Closed(_))));
    }

    #[tokio::test]
    async fn recv_in_a_select_loses_nothing() {
        let (tx, mut rx) = channel(8);
        let mut got = 0;
        for i in 0..50u32 {
            tokio::select! {
                biased;
                _ = tokio::task::yield_now() => {}
                v = rx.recv() => { assert!(v.is_some()); got += 1; }
            }
            tx.try_send(i).unwrap_or(());
            if i % 7 == 0 {
                while let Ok(Some(_)) = timeout(Duration::ZERO, rx.recv()).await {
                    got += 1;
                }
            }
        }
        drop(tx);
        while timeout(BOUND, rx.recv()).await.unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, 50);
    }
}
