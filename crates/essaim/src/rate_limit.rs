//! Upload and download caps shared by all the peers of a session: an async
//! wrapper around the pure [`TokenBucket`].

use std::sync::Mutex;
use std::time::Instant;

use essaim_proto::rate_limit::TokenBucket;

#[derive(Debug)]
pub struct Limiter(Mutex<TokenBucket>);

impl Limiter {
    /// A cap of `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        Limiter(Mutex::new(TokenBucket::new(rate)))
    }

    /// Waits until `n` bytes may pass.
    pub async fn acquire(&self, n: usize) {
        let delay = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n as u64, Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}
