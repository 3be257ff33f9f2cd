//! When a complete torrent has seeded enough: upload ratio, seeding time
//! and idle time, as Transmission and qBittorrent offer them.
//!
//! The ratio is all-time uploaded bytes over all-time downloaded bytes, or
//! over the torrent's size when nothing was downloaded (a torrent seeded
//! from data we made ourselves would otherwise never reach a ratio). The
//! seeding time counts only time spent seeding; the idle time is the time
//! since the last payload byte went up or down while seeding.
//!
//! Pure: the caller passes its totals and times.

use std::time::Duration;

/// The limits in force for one torrent (already resolved from the torrent's
/// own options and the session's defaults); `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeedLimits {
    pub ratio: Option<f64>,
    pub seeding_time: Option<Duration>,
    pub idle_time: Option<Duration>,
}

/// What a torrent has done, for [`SeedLimits::reached`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeedProgress {
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes of the wanted pieces.
    pub size: u64,
    pub seeding_time: Duration,
    pub idle_time: Duration,
}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedLimitReached {
    Ratio,
    SeedingTime,
    IdleTime,
}

impl std::fmt::Display for SeedLimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SeedLimitReached::Ratio => "seed ratio reached",
            SeedLimitReached::SeedingTime => "seeding time reached",
            SeedLimitReached::IdleTime => "idle seeding time reached",
        })
    }
}

/// The upload ratio of `p` (see the module doc).
pub fn ratio(uploaded: u64, downloaded: u64, size: u64) -> f64 {
    let base = if downloaded > 0 { downloaded } else { size };
    if base == 0 {
        return 0.0;
    }
    uploaded as f64 / base as f64
}

impl SeedLimits {
    /// The first limit `p` reached, if any.
    pub fn reached(&self, p: &SeedProgress) -> Option<SeedLimitReached> {
        if let Some(r) = self.ratio {
            if ratio(p.uploaded, p.downloaded, p.size) >= r {
                return Some(SeedLimitReached::Ratio);
            }
        }
        if self.seeding_time.is_some_and(|t| p.seeding_time >= t) {
            return Some(SeedLimitReached::SeedingTime);
        }
        if self.idle_time.is_some_and(|t| p.idle_time >= t) {
            return Some(SeedLimitReached::IdleTime);
        }
        None
    }

    /// How long until a time limit is reached if nothing else happens
    /// (`None`: no time limit): when to look again without polling.
    pub fn next_check(&self, p: &SeedProgress) -> Option<Duration> {
        let seeding = self.seeding_time.map(|t| t.saturating_sub(p.seeding_time));
        let idle = self.idle_time.map(|t| t.saturating_sub(p.idle_time));
        match (seeding, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(up: u64, down: u64, seeding: u64, idle: u64) -> SeedProgress {
        SeedProgress {
            uploaded: up,
            downloaded: down,
            size: 1000,
            seeding_time: Duration::from_secs(seeding),
            idle_time: Duration::from_secs(idle),
        }
    }

    #[test]
    fn ratio_uses_the_size_when_nothing_was_downloaded() {
        assert_eq!(ratio(500, 0, 1000), 0.5);
        assert_eq!(ratio(500, 250, 1000), 2.0);
        assert_eq!(ratio(7, 0, 0), 0.0);
    }

    #[test]
    fn each_limit_and_the_next_check() {
        let none = SeedLimits::default();
        assert_eq!(none.reached(&progress(10_000, 0, 99_999, 99_999)), None);
        assert_eq!(none.next_check(&progress(0, 0, 0, 0)), None);
        let l = SeedLimits {
            ratio: Some(2.0),
            seeding_time: Some(Duration::from_secs(3600)),
            idle_time: Some(Duration::from_secs(600)),
        };
        assert_eq!(l.reached(&progress(1999, 1000, 0, 0)), None);
        assert_eq!(
            l.reached(&progress(2000, 1000, 0, 0)),
            Some(SeedLimitReached::Ratio)
        );
        assert_eq!(
            l.reached(&progress(0, 1000, 3600, 0)),
            Some(SeedLimitReached::SeedingTime)
        );
        assert_eq!(
            l.reached(&progress(0, 1000, 10, 600)),
            Some(SeedLimitReached::IdleTime)
        );
        assert_eq!(
            l.next_check(&progress(0, 1000, 3500, 100)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            l.next_check(&progress(0, 1000, 3000, 590)),
            Some(Duration::from_secs(10))
        );
    }
}
