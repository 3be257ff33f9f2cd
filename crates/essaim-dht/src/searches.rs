//! Lookups and searches of the [`Dht`]: starting them (seeds from the
//! table, the saved nodes and the bootstrap addresses), feeding them
//! queries as slots free up, finishing them (announces, events, the next
//! run of a search), and banning the liars they catch (see
//! [`crate::lookup`]).

use std::net::SocketAddr;
use std::time::Instant;

use essaim_core::InfoHash;
use rand::Rng;

use crate::id::{is_local, NodeId};
use crate::krpc::Query;
use crate::lookup::{Lookup, LookupKind};
use crate::node::{
    Dht, DhtEvent, Purpose, Search, BAN_FOR, MAINTENANCE_EVERY, MAX_BANNED, MAX_LOOKUPS,
    MAX_SEARCHES, RESEARCH_MAX, RESEARCH_MIN, RETRY_EMPTY, SEEDS,
};
use crate::routing::K;

impl Dht {
    /// One key per host, as for the routing table's one-node-per-host rule.
    pub(crate) fn host_key(addr: &SocketAddr) -> SocketAddr {
        if is_local(addr.ip()) {
            *addr
        } else {
            SocketAddr::new(addr.ip(), 0)
        }
    }

    pub(crate) fn is_banned(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.banned
            .get(&Self::host_key(addr))
            .is_some_and(|until| *until > now)
    }

    /// Bans a liar: out of the routing table, out of lookups, for [`BAN_FOR`].
    pub(crate) fn ban(&mut self, addr: SocketAddr, now: Instant) {
        if self.is_banned(&addr, now) {
            return;
        }
        if self.banned.len() >= MAX_BANNED {
            self.banned.retain(|_, until| *until > now);
            if self.banned.len() >= MAX_BANNED {
                return;
            }
        }
        self.stats.banned += 1;
        self.banned.insert(Self::host_key(&addr), now + BAN_FOR);
        self.table.remove_host(&addr, now);
    }

    /// Hosts banned now.
    pub fn banned(&self, now: Instant) -> Vec<SocketAddr> {
        self.banned
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(a, _)| *a)
            .collect()
    }

    /// A lookup query failed: the lookup may find a liar in the referrer.
    pub(crate) fn lookup_failed(&mut self, lid: u64, addr: &SocketAddr, now: Instant) {
        let liar = self.lookups.get_mut(&lid).and_then(|l| l.failed(addr));
        if let Some(liar) = liar {
            self.ban(liar, now);
        }
        self.pump(lid, now);
    }

    /// Finds peers for `info_hash` (reported as [`DhtEvent::Peers`]), and
    /// with `announce` tells the closest nodes that we are a peer on that
    /// port. Repeated every 15 to 30 minutes until
    /// [`Dht::stop_get_peers`]; calling it again while a lookup runs only
    /// updates the port, otherwise it starts a new lookup now.
    pub fn get_peers(&mut self, info_hash: InfoHash, announce: Option<u16>, now: Instant) {
        if !self.searches.contains_key(&info_hash) && self.searches.len() >= MAX_SEARCHES {
            return;
        }
        let search = self.searches.entry(info_hash).or_insert(Search {
            announce,
            lookup: None,
            next_run: None,
        });
        search.announce = announce;
        match search.lookup {
            Some(lid) => {
                if let Some(l) = self.lookups.get_mut(&lid) {
                    l.kind = LookupKind::GetPeers {
                        info_hash,
                        announce,
                    };
                }
            }
            None => self.start_search(info_hash, now),
        }
    }

    /// Forgets a search; its running lookup, if any, is dropped.
    pub fn stop_get_peers(&mut self, info_hash: &InfoHash) {
        if let Some(s) = self.searches.remove(info_hash) {
            if let Some(lid) = s.lookup {
                self.lookups.remove(&lid);
            }
        }
    }

    pub(crate) fn start_search(&mut self, info_hash: InfoHash, now: Instant) {
        let Some(search) = self.searches.get_mut(&info_hash) else {
            return;
        };
        if self.lookups.len() >= MAX_LOOKUPS {
            search.next_run = Some(now + MAINTENANCE_EVERY);
            return;
        }
        let kind = LookupKind::GetPeers {
            info_hash,
            announce: search.announce,
        };
        search.next_run = None;
        let lid = self.start_lookup(NodeId::from(info_hash), kind, now);
        if let Some(s) = self.searches.get_mut(&info_hash) {
            s.lookup = Some(lid);
        }
        self.pump(lid, now);
    }

    pub(crate) fn start_bootstrap(&mut self, now: Instant) {
        let lid = self.start_lookup(self.id, LookupKind::Bootstrap, now);
        self.bootstrap_lookup = Some(lid);
        self.next_bootstrap = now + RETRY_EMPTY;
        self.pump(lid, now);
    }

    /// Seeds: the [`SEEDS`] closest nodes of the table (only the [`K`]
    /// closest are asked unless some fail), and for a bootstrap or while
    /// the table is short of [`K`], the saved nodes and the bootstrap
    /// addresses.
    pub(crate) fn start_lookup(&mut self, target: NodeId, kind: LookupKind, now: Instant) -> u64 {
        let mut seeds: Vec<(Option<NodeId>, SocketAddr)> = self
            .table
            .closest(&target, SEEDS, now, |_| true)
            .into_iter()
            .map(|n| (Some(n.id), n.addr))
            .collect();
        if seeds.len() < K || kind == LookupKind::Bootstrap {
            let saved = self.config.nodes.iter().map(|(id, a)| (Some(*id), *a));
            let boot = self.config.bootstrap.iter().map(|a| (None, *a));
            seeds.extend(
                saved
                    .chain(boot)
                    .filter(|(id, a)| self.addr_ok(a) && *id != Some(self.id)),
            );
        }
        let lid = self.next_lookup;
        self.next_lookup += 1;
        self.lookups
            .insert(lid, Lookup::new(target, kind, seeds, now));
        lid
    }

    /// Sends the lookup's next queries; finishes it when it is done.
    pub(crate) fn pump(&mut self, lid: u64, now: Instant) {
        loop {
            let Some(l) = self.lookups.get(&lid) else {
                return;
            };
            if l.is_done() {
                self.finish(lid, now);
                return;
            }
            let Some((id, addr)) = l.next() else {
                return;
            };
            let query = match l.kind {
                LookupKind::GetPeers { info_hash, .. } => Query::GetPeers {
                    id: self.id,
                    info_hash,
                    want: None,
                },
                _ => Query::FindNode {
                    id: self.id,
                    target: l.target,
                    want: None,
                },
            };
            if !self.send_query(addr, id, query, Purpose::Lookup(lid), false, now) {
                return;
            }
            if let Some(l) = self.lookups.get_mut(&lid) {
                l.sent(&addr);
            }
        }
    }

    pub(crate) fn finish(&mut self, lid: u64, now: Instant) {
        let Some(l) = self.lookups.remove(&lid) else {
            return;
        };
        let stats = l.stats(now);
        match l.kind {
            LookupKind::Bootstrap => {
                self.bootstrap_lookup = None;
                if !self.bootstrapped && stats.responses > 0 && !self.table.is_empty() {
                    self.bootstrapped = true;
                    // Fill the far buckets too, one lookup per tick.
                    self.table.refresh_sparse();
                    self.events.push_back(DhtEvent::Bootstrapped {
                        nodes: self.table.len(),
                    });
                }
            }
            LookupKind::Refresh => {}
            LookupKind::GetPeers {
                info_hash,
                announce,
            } => {
                let mut announced = 0;
                if let Some(port) = announce {
                    for (id, addr, token) in l.closest_with_tokens(K) {
                        let q = Query::AnnouncePeer {
                            id: self.id,
                            info_hash,
                            port,
                            implied_port: false,
                            token,
                        };
                        if self.send_query(addr, Some(id), q, Purpose::Announce, true, now) {
                            announced += 1;
                        }
                    }
                }
                self.events.push_back(DhtEvent::LookupDone {
                    info_hash,
                    stats,
                    announced,
                });
                let delay = if stats.responses == 0 {
                    RETRY_EMPTY
                } else {
                    self.rng.gen_range(RESEARCH_MIN..=RESEARCH_MAX)
                };
                if let Some(s) = self.searches.get_mut(&info_hash) {
                    if s.lookup == Some(lid) {
                        s.lookup = None;
                        s.next_run = Some(now + delay);
                    }
                }
            }
        }
    }
}
