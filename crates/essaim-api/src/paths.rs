//! Download folders given by clients, confined to the roots the user
//! allowed: the configured download folder and an allow-list
//! ([`crate::ApiConfig::allowed_roots`]).
//!
//! A path is refused, with a message saying why, when it has a `..`
//! component, when it is not under a root once every symbolic link in the
//! part that exists is resolved (a link inside a root pointing outside it
//! does not make its target allowed), or when it is empty or holds a NUL.
//! A relative path is taken under the download folder. The roots
//! themselves are resolved once, at start.

use std::path::{Component, Path, PathBuf};

use crate::error::ApiError;

/// The allowed roots, resolved.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The configured download folder (first) and the allow-list.
    roots: Vec<PathBuf>,
}

impl Roots {
    /// Resolves the roots (those that do not exist yet are created).
    pub fn new(download_dir: &Path, allowed: &[PathBuf]) -> std::io::Result<Roots> {
        let mut roots = Vec::new();
        for r in std::iter::once(download_dir).chain(allowed.iter().map(PathBuf::as_path)) {
            std::fs::create_dir_all(r)?;
            roots.push(r.canonicalize()?);
        }
        Ok(Roots { roots })
    }

    /// The resolved roots, the download folder first.
    pub fn list(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `path` if it lies under a root (see the module doc); the path as
    /// given when absolute, else joined under the download folder.
    pub fn confine(&self, path: &str) -> Result<PathBuf, ApiError> {
        if path.is_empty() || path.contains('\0') {
            return Err(ApiError::BadRequest(
                "the folder is empty or holds a NUL".into(),
            ));
        }
        let p = Path::new(path);
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(ApiError::BadRequest(format!(
                "{path:?}: `..` is not allowed in a download folder"
            )));
        }
        let base = self.roots.first().cloned().unwrap_or_default();
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        let resolved = resolve(&full).map_err(|e| {
            ApiError::BadRequest(format!("{}: cannot be resolved: {e}", full.display()))
        })?;
        if self.roots.iter().any(|r| resolved.starts_with(r)) {
            Ok(full)
        } else {
            Err(ApiError::Forbidden(format!(
                "{} is outside the allowed download folders ({})",
                full.display(),
                self.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// `path` with every symbolic link of its existing part resolved, the rest
/// appended as it is.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(e);
                };
                rest.push(name);
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement() {
        let dir = tempfile::tempdir().unwrap();
        let dl = dir.path().join("dl");
        let more = dir.path().join("more");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let roots = Roots::new(&dl, std::slice::from_ref(&more)).unwrap();
        let ok = |p: &Path| roots.confine(p.to_str().unwrap());
        assert_eq!(ok(&dl.join("a/b")).unwrap(), dl.join("a/b"));
        assert!(ok(&more).is_ok());
        assert_eq!(
            roots.confine("rel/x").unwrap(),
            roots.list()[0].join("rel/x")
        );
        assert!(matches!(ok(&outside), Err(ApiError::Forbidden(_))));
        assert!(matches!(ok(Path::new("/etc")), Err(ApiError::Forbidden(_))));
        assert!(matches!(
            ok(&dl.join("../outside")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(roots.confine("a/../../x").is_err());
        assert!(roots.confine("").is_err());
        assert!(roots.confine("a\0b").is_err());
        // A link inside a root that points outside it.
        std::os::unix::fs::symlink(&outside, dl.join("escape")).unwrap();
        assert!(matches!(
            ok(&dl.join("escape")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            ok(&dl.join("escape/deeper/new")),
            Err(ApiError::Forbidden(_))
        ));
        // A link inside a root pointing inside one is fine.
        std::os::unix::fs::symlink(&more, dl.join("tomore")).unwrap();
        assert!(ok(&dl.join("tomore/x")).is_ok());
    }
}
