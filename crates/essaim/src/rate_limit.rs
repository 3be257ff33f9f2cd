//! Upload and download caps: an async wrapper around the pure
//! [`TokenBucket`]. A [`Limiter`] may be unlimited and its rate may change
//! at run time; the peers of a torrent go through two of them, the
//! session's and the torrent's ([`Limits`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use essaim_proto::rate_limit::TokenBucket;

#[derive(Debug, Default)]
pub struct Limiter {
    /// `false`: no cap, and `acquire` returns at once without locking.
    limited: AtomicBool,
    bucket: Mutex<Option<TokenBucket>>,
}

impl Limiter {
    /// A cap of `rate` bytes per second; `None`: no cap.
    pub fn new(rate: Option<u64>) -> Self {
        let l = Limiter::default();
        l.set_rate(rate);
        l
    }

    /// Changes the cap (a new bucket: the burst starts full again).
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.as_ref().map(|b| b.rate()) == rate {
            return;
        }
        *b = rate.map(TokenBucket::new);
        self.limited.store(rate.is_some(), Ordering::Release);
    }

    /// Waits until `n` bytes may pass.
    pub async fn acquire(&self, n: usize) {
        if !self.limited.load(Ordering::Acquire) {
            return;
        }
        let delay = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(|b| b.take(n as u64, Instant::now()))
            .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The caps a peer's bytes pass through: the session's, then its
/// torrent's.
#[derive(Debug, Clone, Default)]
pub struct Limits(pub Vec<Arc<Limiter>>);

impl Limits {
    pub async fn acquire(&self, n: usize) {
        for l in &self.0 {
            l.acquire(n).await;
        }
    }
}
