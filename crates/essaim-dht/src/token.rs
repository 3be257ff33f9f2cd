//! Write tokens (BEP 5 §"Overview"): a `get_peers` reply carries a token
//! that the querier must present in its `announce_peer`, proving it
//! received our reply at the address it announces from, so nobody can sign
//! up a third party's address.
//!
//! A token is the first [`TOKEN_LEN`] bytes of SHA-1(secret || ip). The
//! secret changes every [`ROTATE_EVERY`]; the previous one is still
//! accepted, so a token stays valid for 5 to 10 minutes, as BEP 5 says of
//! the BitTorrent implementation.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use sha1::{Digest, Sha1};

/// How often the secret changes.
pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);
/// Bytes of a token we hand out.
pub const TOKEN_LEN: usize = 8;

pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
}

impl Tokens {
    pub fn new(now: Instant, rng: &mut impl Rng) -> Self {
        Tokens {
            current: rng.gen(),
            previous: rng.gen(),
            rotated_at: now,
        }
    }

    /// The token for `ip` under the current secret.
    pub fn make(&self, ip: IpAddr) -> Vec<u8> {
        make_token(&self.current, ip)
    }

    /// Whether `token` was handed to `ip` under the current or the previous
    /// secret. The comparison does not stop at the first differing byte.
    pub fn is_valid(&self, token: &[u8], ip: IpAddr) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        };
        eq(token, &make_token(&self.current, ip)) | eq(token, &make_token(&self.previous, ip))
    }

    /// When the secret must change next.
    pub fn next_rotation(&self) -> Instant {
        self.rotated_at + ROTATE_EVERY
    }

    /// Rotates the secret if it is due (possibly twice, after a long sleep,
    /// so that no token older than 10 minutes survives).
    pub fn maybe_rotate(&mut self, now: Instant, rng: &mut impl Rng) {
        if now < self.next_rotation() {
            return;
        }
        if now >= self.rotated_at + 2 * ROTATE_EVERY {
            self.previous = rng.gen();
        } else {
            self.previous = self.current;
        }
        self.current = rng.gen();
        self.rotated_at = now;
    }
}

fn make_token(secret: &[u8; 16], ip: IpAddr) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(secret);
    match ip {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
    h.finalize()[..TOKEN_LEN].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn valid_for_the_same_ip_only() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let tokens = Tokens::new(t0, &mut rng);
        let t = tokens.make(ip("1.2.3.4"));
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(tokens.is_valid(&t, ip("1.2.3.4")));
        assert!(!tokens.is_valid(&t, ip("1.2.3.5")), "wrong ip");
        assert!(!tokens.is_valid(&t[..7], ip("1.2.3.4")), "truncated");
        assert!(!tokens.is_valid(b"", ip("1.2.3.4")));
        let mut forged = t.clone();
        forged[0] ^= 1;
        assert!(!tokens.is_valid(&forged, ip("1.2.3.4")), "forged");
        let t6 = tokens.make(ip("2001:db8::1"));
        assert!(tokens.is_valid(&t6, ip("2001:db8::1")));
        assert!(!tokens.is_valid(&t6, ip("2001:db8::2")));
    }

    #[test]
    fn rotated_tokens_live_5_to_10_minutes() {
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut tokens = Tokens::new(t0, &mut rng);
        let a = ip("10.0.0.1");
        let t = tokens.make(a);
        // Not due yet: nothing changes.
        tokens.maybe_rotate(t0 + Duration::from_secs(299), &mut rng);
        assert_eq!(tokens.make(a), t);
        // First rotation: the old token is still accepted.
        tokens.maybe_rotate(t0 + ROTATE_EVERY, &mut rng);
        assert_ne!(tokens.make(a), t);
        assert!(tokens.is_valid(&t, a), "previous secret still accepted");
        let t2 = tokens.make(a);
        // Second rotation: expired.
        tokens.maybe_rotate(t0 + 2 * ROTATE_EVERY, &mut rng);
        assert!(!tokens.is_valid(&t, a), "two rotations old");
        assert!(tokens.is_valid(&t2, a));
        // A long sleep expires everything at once.
        let t3 = tokens.make(a);
        tokens.maybe_rotate(t0 + 10 * ROTATE_EVERY, &mut rng);
        assert!(!tokens.is_valid(&t3, a));
    }
}
