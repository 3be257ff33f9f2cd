//! Settings changed at run time, and how they survive a restart.
//!
//! The session starts from a *base* (the configuration file and flags).
//! A change made at run time is saved in `STATE/settings.json` with the
//! base value it replaced: `{"overrides": {"upload_limit": {"value": ...,
//! "base": ...}}}`. At the next start a saved change is applied only if
//! the base still has that value, so that editing the configuration file
//! later wins over an old change made through the API, and a change
//! through the API wins over a configuration that did not change.

use serde_json::{Map, Value};

use super::SessionError;
use crate::store::Store;
use crate::types::{SeedLimitAction, Settings};

/// Changes to the settings; `None` leaves a setting alone (`Some(None)`
/// clears an optional one: no limit).
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    pub download_dir: Option<std::path::PathBuf>,
    pub upload_limit: Option<Option<u64>>,
    pub download_limit: Option<Option<u64>>,
    pub max_active_downloads: Option<Option<usize>>,
    pub max_active_seeds: Option<Option<usize>>,
    pub seed_ratio: Option<Option<f64>>,
    pub seed_time: Option<Option<u64>>,
    pub seed_idle_time: Option<Option<u64>>,
    pub seed_limit_action: Option<SeedLimitAction>,
    pub max_peers_per_torrent: Option<usize>,
    pub max_peers: Option<usize>,
    pub upload_slots: Option<usize>,
    pub start_paused: Option<bool>,
    pub initial_seeding: Option<bool>,
}

impl SettingsPatch {
    fn apply_to(&self, s: &mut Settings) {
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f {
                    s.$f = v.clone();
                }
            )*};
        }
        set!(
            download_dir,
            upload_limit,
            download_limit,
            max_active_downloads,
            max_active_seeds,
            seed_ratio,
            seed_time,
            seed_idle_time,
            seed_limit_action,
            max_peers_per_torrent,
            max_peers,
            upload_slots,
            start_paused,
            initial_seeding
        );
    }
}

/// Checks settings for values that make no sense.
pub(crate) fn validate(s: &Settings) -> Result<(), SessionError> {
    let bad = |what: &str| Err(SessionError::Invalid(what.to_owned()));
    if s.max_peers == 0 || s.max_peers_per_torrent == 0 {
        return bad("peer limits must be at least 1");
    }
    if s.upload_slots == 0 {
        return bad("upload_slots must be at least 1");
    }
    if s.upload_limit == Some(0) || s.download_limit == Some(0) {
        return bad("a rate limit of 0 would stop all traffic: pause instead, or give no limit");
    }
    if let Some(r) = s.seed_ratio {
        if !r.is_finite() || r < 0.0 {
            return bad("seed_ratio must be a finite number, 0 or more");
        }
    }
    if s.download_dir.as_os_str().is_empty() {
        return bad("download_dir must not be empty");
    }
    Ok(())
}

pub(super) struct SettingsState {
    base: Settings,
    pub current: Settings,
    /// Setting name → (value, base value it replaced).
    overrides: Map<String, Value>,
}

fn to_map(s: &Settings) -> Map<String, Value> {
    match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn from_map(m: Map<String, Value>) -> Option<Settings> {
    serde_json::from_value(Value::Object(m)).ok()
}

impl SettingsState {
    /// The settings to start with: `base`, with the saved changes whose
    /// base value is still the same.
    pub fn load(base: Settings, store: Option<&Store>) -> SettingsState {
        let mut st = SettingsState {
            current: base.clone(),
            base,
            overrides: Map::new(),
        };
        let Some(Value::Object(saved)) = store.and_then(|s| s.load_settings()) else {
            return st;
        };
        let Some(Value::Object(overrides)) = saved.get("overrides") else {
            return st;
        };
        let base_map = to_map(&st.base);
        let mut current = base_map.clone();
        for (key, o) in overrides {
            let (Some(value), Some(was)) = (o.get("value"), o.get("base")) else {
                continue;
            };
            if base_map.get(key) == Some(was) {
                current.insert(key.clone(), value.clone());
                st.overrides.insert(key.clone(), o.clone());
            }
        }
        match from_map(current) {
            Some(s) if validate(&s).is_ok() => st.current = s,
            _ => {
                tracing::warn!("saved settings do not apply; starting from the configuration");
                st.overrides.clear();
            }
        }
        st
    }

    /// Applies a change; the new settings.
    pub fn apply(&mut self, patch: &SettingsPatch) -> Result<Settings, SessionError> {
        let mut new = self.current.clone();
        patch.apply_to(&mut new);
        validate(&new)?;
        let (old_map, new_map, base_map) =
            (to_map(&self.current), to_map(&new), to_map(&self.base));
        for (key, value) in &new_map {
            if old_map.get(key) == Some(value) {
                continue;
            }
            let base = base_map.get(key).cloned().unwrap_or(Value::Null);
            if base == *value {
                self.overrides.remove(key);
            } else {
                let mut o = Map::new();
                o.insert("value".into(), value.clone());
                o.insert("base".into(), base);
                self.overrides.insert(key.clone(), Value::Object(o));
            }
        }
        self.current = new.clone();
        Ok(new)
    }

    /// New base settings: those whose base value changed take it.
    pub fn rebase(&mut self, base: Settings) -> Settings {
        let (old_base, new_base) = (to_map(&self.base), to_map(&base));
        let mut current = to_map(&self.current);
        for (key, value) in &new_base {
            if old_base.get(key) != Some(value) {
                current.insert(key.clone(), value.clone());
                self.overrides.remove(key);
            }
        }
        if let Some(s) = from_map(current).filter(|s| validate(s).is_ok()) {
            self.current = s;
        } else {
            self.current = base.clone();
            self.overrides.clear();
        }
        self.base = base;
        self.current.clone()
    }

    pub fn save(&self, store: Option<&Store>) {
        let Some(store) = store else { return };
        let mut doc = Map::new();
        doc.insert("overrides".into(), Value::Object(self.overrides.clone()));
        if let Err(e) = store.save_settings(&Value::Object(doc)) {
            tracing::warn!("cannot save the settings: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_survives_until_the_configuration_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let base = Settings::default();
        let mut st = SettingsState::load(base.clone(), Some(&store));
        let patch = SettingsPatch {
            upload_limit: Some(Some(1000)),
            max_active_seeds: Some(None),
            ..SettingsPatch::default()
        };
        let now = st.apply(&patch).unwrap();
        assert_eq!(now.upload_limit, Some(1000));
        assert_eq!(now.max_active_seeds, None);
        st.save(Some(&store));
        // Restart, same configuration: the change is back.
        let st2 = SettingsState::load(base.clone(), Some(&store));
        assert_eq!(st2.current, now);
        // Restart with the configuration's upload limit edited: it wins;
        // the other change stays.
        let edited = Settings {
            upload_limit: Some(5),
            ..base.clone()
        };
        let st3 = SettingsState::load(edited.clone(), Some(&store));
        assert_eq!(st3.current.upload_limit, Some(5));
        assert_eq!(st3.current.max_active_seeds, None);
        // Reload while running: the same rule.
        let mut st4 = SettingsState::load(base.clone(), Some(&store));
        let after = st4.rebase(Settings {
            max_active_seeds: Some(3),
            ..base.clone()
        });
        assert_eq!(after.upload_limit, Some(1000));
        assert_eq!(after.max_active_seeds, Some(3));
        // A change back to the base value drops the override.
        let mut st5 = SettingsState::load(base.clone(), Some(&store));
        st5.apply(&SettingsPatch {
            upload_limit: Some(None),
            ..SettingsPatch::default()
        })
        .unwrap();
        assert!(!st5.overrides.contains_key("upload_limit"));
        // Nonsense is refused.
        assert!(st5
            .apply(&SettingsPatch {
                max_peers: Some(0),
                ..SettingsPatch::default()
            })
            .is_err());
        assert!(st5
            .apply(&SettingsPatch {
                seed_ratio: Some(Some(f64::NAN)),
                ..SettingsPatch::default()
            })
            .is_err());
    }
}
