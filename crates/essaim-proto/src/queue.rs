//! The session's queue: which torrents may be active.
//!
//! Policy (as Transmission's and qBittorrent's download and seed queues):
//! at most [`QueueLimits::downloads`] torrents download at once and at most
//! [`QueueLimits::seeds`] seed; the others wait, `Queued`, and start in
//! queue order (lowest position first) as places free up. A download that
//! completes moves to the seed queue. A forced torrent always runs and
//! takes no place. Only torrents that want to run are queued: paused ones,
//! those in error and those whose kind is unknown (their data still being
//! checked) are left out by the caller.
//!
//! Pure: a function of its inputs, recomputed after every change.

/// Whether a torrent downloads or seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Still missing wanted pieces (or its metadata).
    Download,
    /// Has every wanted piece.
    Seed,
}

/// At most this many active downloads and seeds; `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub downloads: Option<usize>,
    pub seeds: Option<usize>,
}

impl Default for QueueLimits {
    /// 5 downloads and 10 seeds.
    fn default() -> Self {
        QueueLimits {
            downloads: Some(5),
            seeds: Some(10),
        }
    }
}

/// One torrent that wants to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry<K> {
    pub key: K,
    /// Place in the queue; lower goes first.
    pub position: u64,
    pub kind: QueueKind,
    /// Started by force: runs whatever the limits, and counts for none.
    pub force: bool,
}

/// The keys of the entries that may run, in queue order.
pub fn admitted<K: Copy>(entries: &[QueueEntry<K>], limits: QueueLimits) -> Vec<K> {
    let mut order: Vec<&QueueEntry<K>> = entries.iter().collect();
    order.sort_by_key(|e| e.position);
    let (mut downloads, mut seeds) = (0usize, 0usize);
    let mut out = Vec::new();
    for e in order {
        let ok = e.force
            || match e.kind {
                QueueKind::Download => limits.downloads.is_none_or(|max| downloads < max),
                QueueKind::Seed => limits.seeds.is_none_or(|max| seeds < max),
            };
        if !ok {
            continue;
        }
        if !e.force {
            match e.kind {
                QueueKind::Download => downloads += 1,
                QueueKind::Seed => seeds += 1,
            }
        }
        out.push(e.key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(key: u32, position: u64, kind: QueueKind, force: bool) -> QueueEntry<u32> {
        QueueEntry {
            key,
            position,
            kind,
            force,
        }
    }

    use QueueKind::{Download as D, Seed as S};

    #[test]
    fn limits_apply_per_kind_in_queue_order() {
        let entries = [
            e(1, 4, D, false),
            e(2, 1, D, false),
            e(3, 3, S, false),
            e(4, 2, D, false),
            e(5, 0, S, false),
            e(6, 9, D, true),
            e(7, 5, S, false),
        ];
        let limits = QueueLimits {
            downloads: Some(2),
            seeds: Some(1),
        };
        assert_eq!(admitted(&entries, limits), [5, 2, 4, 6]);
        let none = QueueLimits {
            downloads: None,
            seeds: Some(0),
        };
        assert_eq!(admitted(&entries, none), [2, 4, 1, 6]);
        assert_eq!(
            admitted::<u32>(&[], QueueLimits::default()),
            Vec::<u32>::new()
        );
    }

    proptest! {
        /// Never more than the limit of each kind unforced; every forced
        /// entry runs; an admitted unforced entry never waits behind a
        /// queued one of its kind placed later.
        #[test]
        fn admission_respects_limits_and_order(
            raw in proptest::collection::vec((0u64..50, any::<bool>(), any::<bool>()), 0..40),
            dl in proptest::option::of(0usize..6),
            sd in proptest::option::of(0usize..6),
        ) {
            let entries: Vec<QueueEntry<u32>> = raw
                .iter()
                .enumerate()
                .map(|(i, (pos, seed, force))| e(i as u32, *pos, if *seed { S } else { D }, *force))
                .collect();
            let limits = QueueLimits { downloads: dl, seeds: sd };
            let ok = admitted(&entries, limits);
            for kind in [D, S] {
                let limit = if kind == D { dl } else { sd };
                let running: Vec<&QueueEntry<u32>> = entries
                    .iter()
                    .filter(|x| x.kind == kind && !x.force && ok.contains(&x.key))
                    .collect();
                if let Some(max) = limit {
                    prop_assert!(running.len() <= max);
                }
                let waiting = entries
                    .iter()
                    .filter(|x| x.kind == kind && !ok.contains(&x.key));
                for w in waiting {
                    prop_assert!(!w.force);
                    prop_assert!(running.iter().all(|r| r.position <= w.position));
                    prop_assert_eq!(Some(running.len()), limit, "a free place went unused");
                }
            }
        }
    }
}
