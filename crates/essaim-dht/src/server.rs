//! Answering other nodes' queries: ping, find_node, get_peers (with a write
//! token) and announce_peer (checked against the token), within the reply
//! budgets and the reply size limit (see the invariants of [`crate::node`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::krpc::{self, error_code, Body, KrpcError, Message, Query, Response, Want};
use crate::node::{Dht, Purpose, MAX_VALUES};
use crate::routing::K;

/// Unknown nodes pinged after they queried us, remembered at most.
const MAX_PINGED: usize = 1024;
/// An unknown node that queried us is pinged at most this often.
const REPING_AFTER: Duration = Duration::from_secs(300);

impl Dht {
    pub(crate) fn handle_query(
        &mut self,
        from: SocketAddr,
        tid: Vec<u8>,
        q: Query,
        read_only_sender: bool,
        query_len: usize,
        now: Instant,
    ) {
        self.stats.queries_in += 1;
        if self.config.read_only {
            return;
        }
        let qid = q.id();
        if qid == self.id {
            return;
        }
        if !self.reply_limiter.allow(from.ip(), now) {
            self.stats.replies_limited += 1;
            return;
        }
        if !read_only_sender {
            self.note_querier(qid, from, now);
        }
        let body = match q {
            Query::Ping { .. } => Body::Response(Response::id_only(self.id)),
            Query::FindNode { target, want, .. } => {
                let mut r = Response::id_only(self.id);
                self.add_nodes(&mut r, &target, want, from, now);
                Body::Response(r)
            }
            Query::GetPeers {
                info_hash, want, ..
            } => {
                let mut r = Response::id_only(self.id);
                r.token = Some(self.tokens.make(from.ip()));
                r.values =
                    self.store
                        .peers(&info_hash, from.is_ipv6(), MAX_VALUES, now, &mut self.rng);
                if r.values.is_empty() || want.is_some() {
                    self.add_nodes(&mut r, &NodeId::from(info_hash), want, from, now);
                }
                Body::Response(r)
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                ..
            } => {
                if !self.tokens.is_valid(&token, from.ip()) {
                    self.stats.announces_refused += 1;
                    Body::Error(KrpcError {
                        code: error_code::PROTOCOL,
                        message: b"invalid token".to_vec(),
                    })
                } else {
                    let port = if implied_port { from.port() } else { port };
                    let peer = SocketAddr::new(from.ip(), port);
                    if self.store.announce(info_hash, peer, now) {
                        self.stats.announces_stored += 1;
                    }
                    Body::Response(Response::id_only(self.id))
                }
            }
        };
        if matches!(body, Body::Error(_)) {
            self.stats.errors_sent += 1;
        } else {
            self.stats.replies_sent += 1;
        }
        let reply = Message {
            tid,
            version: self.config.version.clone(),
            read_only: false,
            ip: Some(from),
            body,
        };
        if let Some(bytes) = fit(
            reply,
            query_len.saturating_mul(self.config.max_reply_factor),
        ) {
            self.out.push_back((from, bytes));
        }
    }

    /// `nodes`/`nodes6` for a find_node or get_peers reply: per `want`
    /// (BEP 32), else the family of the querier. Our table holds one family
    /// only, so the other list comes out empty.
    fn add_nodes(
        &self,
        r: &mut Response,
        target: &NodeId,
        want: Option<Want>,
        from: SocketAddr,
        now: Instant,
    ) {
        let want = want.unwrap_or(Want {
            n4: from.is_ipv4(),
            n6: from.is_ipv6(),
        });
        if want.n4 {
            r.nodes = self.table.closest(target, K, now, |a| a.is_ipv4());
        }
        if want.n6 {
            r.nodes6 = self.table.closest(target, K, now, |a| a.is_ipv6());
        }
    }

    /// A node we do not know queried us: ping it once, if its bucket would
    /// take it, so that it enters the table when it answers (the table only
    /// holds nodes that answered us).
    fn note_querier(&mut self, id: NodeId, from: SocketAddr, now: Instant) {
        if self.table.node_queried(&id, &from, now)
            || !self.table.would_accept(&id, &from, now)
            || self.is_banned(&from, now)
        {
            return;
        }
        if self
            .pinged
            .get(&from)
            .is_some_and(|t| now.saturating_duration_since(*t) < REPING_AFTER)
        {
            return;
        }
        if self.pinged.len() >= MAX_PINGED {
            self.pinged
                .retain(|_, t| now.saturating_duration_since(*t) < REPING_AFTER);
            if self.pinged.len() >= MAX_PINGED {
                return;
            }
        }
        self.pinged.insert(from, now);
        self.send_query(
            from,
            Some(id),
            Query::Ping { id: self.id },
            Purpose::Ping,
            false,
            now,
        );
    }

    /// Answers a query we could not read with 203 (or 204 for an unknown
    /// method), within the same budgets as replies.
    pub(crate) fn reply_error(
        &mut self,
        from: SocketAddr,
        tid: Vec<u8>,
        kind: &krpc::ErrorKind,
        query_len: usize,
        now: Instant,
    ) {
        if self.config.read_only || !self.reply_limiter.allow(from.ip(), now) {
            return;
        }
        let (code, message): (i64, &[u8]) = match kind {
            krpc::ErrorKind::UnknownMethod => (error_code::METHOD_UNKNOWN, b"method unknown"),
            _ => (error_code::PROTOCOL, b"invalid query"),
        };
        let reply = Message {
            tid,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Error(KrpcError {
                code,
                message: message.to_vec(),
            }),
        };
        let bytes = reply.encode();
        if bytes.len() <= query_len.saturating_mul(self.config.max_reply_factor) {
            self.stats.errors_sent += 1;
            self.out.push_back((from, bytes));
        }
    }
}

/// Encodes `reply`, dropping peers, then nodes, until it is at most `limit`
/// bytes (then the `ip` and `v` fields if it must); `None` if even the
/// bare reply is too long.
pub(crate) fn fit(mut reply: Message, limit: usize) -> Option<Vec<u8>> {
    loop {
        let bytes = reply.encode();
        let excess = bytes.len().saturating_sub(limit);
        if excess == 0 {
            return Some(bytes);
        }
        let Body::Response(r) = &mut reply.body else {
            return None;
        };
        if !r.values.is_empty() {
            // 8 to 21 bytes per IPv4/IPv6 entry with its length prefix.
            let drop = excess.div_ceil(8).min(r.values.len());
            r.values.truncate(r.values.len() - drop);
        } else if !r.nodes6.is_empty() {
            r.nodes6.pop();
        } else if !r.nodes.is_empty() {
            r.nodes.pop();
        } else if reply.ip.is_some() {
            reply.ip = None;
        } else if reply.version.is_some() {
            reply.version = None;
        } else {
            return None;
        }
    }
}
