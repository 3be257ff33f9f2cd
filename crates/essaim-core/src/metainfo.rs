//! Metainfo (.torrent files), BEP 3 §"metainfo files", with BEP 12
//! announce-lists, BEP 27 `private` and BEP 47 padding files.
//!
//! Parsing validates everything a hostile file could get wrong: types,
//! piece geometry, total size overflow, and file paths. A path component may
//! not be empty, `.` or `..`, contain `/`, `\`, NUL or a drive letter colon;
//! such a torrent is refused with an error naming the path, so nothing can
//! be written outside the folder the user chose.

use crate::bencode::{self, Value};
use crate::layout::{Layout, LayoutError};
use crate::types::InfoHash;
use crate::OwnedValue;

/// Most files accepted in one torrent.
pub const MAX_FILES: usize = 1_000_000;
/// Longest path component accepted, in bytes (most filesystems allow 255).
pub const MAX_COMPONENT_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error("not bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` has the wrong type or value")]
    Invalid(&'static str),
    #[error("`pieces` is {0} bytes, not a multiple of 20")]
    PiecesLength(usize),
    #[error("the torrent has {expected} pieces of data but `pieces` lists {got}")]
    PieceCount { expected: u32, got: usize },
    #[error("unsafe file path {path:?}: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error("two files have the same path {0:?}")]
    DuplicatePath(String),
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("the torrent holds no data")]
    Empty,
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path components below the torrent's root folder (for a single-file
    /// torrent: just the name). Every component is checked safe.
    pub path: Vec<String>,
    pub length: u64,
    /// BEP 47 padding file: not written to disk, all zeros.
    pub pad: bool,
}

/// The `info` dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub piece_length: u32,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileInfo>,
    /// `true` when the torrent has a `files` list (content goes in a folder `name`).
    pub multi_file: bool,
    pub private: bool,
    pub layout: Layout,
}

/// A parsed .torrent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    /// The raw `info` bytes as found in the file (served by ut_metadata).
    pub info_bytes: Vec<u8>,
    pub info: Info,
    /// Tiers of tracker URLs (BEP 12), or one tier with `announce`.
    pub trackers: Vec<Vec<String>>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl Metainfo {
    /// Parses a whole .torrent file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let root = bencode::decode(bytes)?;
        if root.as_dict().is_none() {
            return Err(MetainfoError::Invalid("root"));
        }
        let info_value = root.get(b"info").ok_or(MetainfoError::Missing("info"))?;
        let info = Info::from_value(info_value)?;
        let mut trackers: Vec<Vec<String>> = Vec::new();
        if let Some(list) = root.get(b"announce-list").and_then(Value::as_list) {
            for tier in list {
                let urls: Vec<String> = tier
                    .as_list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .filter(|u| !u.is_empty())
                    .collect();
                if !urls.is_empty() {
                    trackers.push(urls);
                }
            }
        }
        if trackers.is_empty() {
            if let Some(url) = root.get(b"announce").and_then(Value::as_str) {
                if !url.is_empty() {
                    trackers.push(vec![url.to_owned()]);
                }
            }
        }
        Ok(Metainfo {
            info_hash: InfoHash::of_info(info_value.raw),
            info_bytes: info_value.raw.to_vec(),
            info,
            trackers,
            comment: root.get(b"comment").and_then(text),
            created_by: root.get(b"created by").and_then(text),
            creation_date: root.get(b"creation date").and_then(Value::as_int),
        })
    }

    /// Builds a metainfo from raw `info` bytes (after a BEP 9 metadata fetch).
    pub fn from_info_bytes(
        info_bytes: &[u8],
        trackers: Vec<Vec<String>>,
    ) -> Result<Self, MetainfoError> {
        let value = bencode::decode(info_bytes)?;
        Ok(Metainfo {
            info_hash: InfoHash::of_info(info_bytes),
            info_bytes: info_bytes.to_vec(),
            info: Info::from_value(&value)?,
            trackers,
            comment: None,
            created_by: None,
            creation_date: None,
        })
    }

    /// The whole .torrent file, with the `info` bytes kept as they are.
    pub fn to_torrent_bytes(&self) -> Vec<u8> {
        encode_torrent(
            &self.info_bytes,
            &self.trackers,
            self.comment.as_deref(),
            self.created_by.as_deref(),
            self.creation_date,
        )
    }

    /// The magnet link (BEP 9) with name and trackers.
    pub fn magnet(&self) -> String {
        let trackers: Vec<String> = self.trackers.iter().flatten().cloned().collect();
        crate::magnet::Magnet {
            info_hash: self.info_hash,
            display_name: Some(self.info.name.clone()),
            trackers,
            peers: Vec::new(),
            select_only: None,
        }
        .to_uri()
    }
}

fn text(v: &Value<'_>) -> Option<String> {
    v.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Info {
    /// Parses and validates an `info` dictionary.
    pub fn from_value(v: &Value<'_>) -> Result<Self, MetainfoError> {
        if v.as_dict().is_none() {
            return Err(MetainfoError::Invalid("info"));
        }
        // BEP 3: prefer `name.utf-8` where present, as other clients do.
        let name_value = v
            .get(b"name.utf-8")
            .or_else(|| v.get(b"name"))
            .ok_or(MetainfoError::Missing("name"))?;
        let name = name_value
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or(MetainfoError::Invalid("name"))?;
        check_component(&name, &name)?;
        let piece_length = v
            .get(b"piece length")
            .ok_or(MetainfoError::Missing("piece length"))?
            .as_int()
            .and_then(|p| u64::try_from(p).ok())
            .ok_or(MetainfoError::Invalid("piece length"))?;
        let pieces_raw = v
            .get(b"pieces")
            .ok_or(MetainfoError::Missing("pieces"))?
            .as_bytes()
            .ok_or(MetainfoError::Invalid("pieces"))?;
        if pieces_raw.len() % 20 != 0 {
            return Err(MetainfoError::PiecesLength(pieces_raw.len()));
        }
        let private = v.get(b"private").and_then(Value::as_int) == Some(1);

        let (files, multi_file) = match (v.get(b"length"), v.get(b"files")) {
            (Some(len), None) => {
                let length = len
                    .as_int()
                    .and_then(|l| u64::try_from(l).ok())
                    .ok_or(MetainfoError::Invalid("length"))?;
                (
                    vec![FileInfo {
                        path: vec![name.clone()],
                        length,
                        pad: false,
                    }],
                    false,
                )
            }
            (None, Some(files)) => (parse_files(files, &name)?, true),
            (Some(_), Some(_)) => return Err(MetainfoError::Invalid("length and files")),
            (None, None) => return Err(MetainfoError::Missing("length or files")),
        };
        let lengths: Vec<u64> = files.iter().map(|f| f.length).collect();
        let layout = Layout::new(piece_length, &lengths)?;
        if layout.total_length() == 0 {
            return Err(MetainfoError::Empty);
        }
        if layout.num_pieces() as usize != pieces_raw.len() / 20 {
            return Err(MetainfoError::PieceCount {
                expected: layout.num_pieces(),
                got: pieces_raw.len() / 20,
            });
        }
        let pieces = pieces_raw
            .chunks_exact(20)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Ok(Info {
            name,
            piece_length: layout.piece_length(),
            pieces,
            files,
            multi_file,
            private,
            layout,
        })
    }

    pub fn total_length(&self) -> u64 {
        self.layout.total_length()
    }
}

fn parse_files(files: &Value<'_>, name: &str) -> Result<Vec<FileInfo>, MetainfoError> {
    let list = files.as_list().ok_or(MetainfoError::Invalid("files"))?;
    if list.len() > MAX_FILES {
        return Err(MetainfoError::TooManyFiles);
    }
    if list.is_empty() {
        return Err(MetainfoError::Empty);
    }
    let mut out = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::new();
    for f in list {
        let length = f
            .get(b"length")
            .and_then(Value::as_int)
            .and_then(|l| u64::try_from(l).ok())
            .ok_or(MetainfoError::Invalid("files.length"))?;
        let path_value = f
            .get(b"path.utf-8")
            .or_else(|| f.get(b"path"))
            .and_then(Value::as_list)
            .ok_or(MetainfoError::Missing("files.path"))?;
        let path: Vec<String> = path_value
            .iter()
            .map(|c| {
                c.as_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .ok_or(MetainfoError::Invalid("files.path"))
            })
            .collect::<Result<_, _>>()?;
        let shown = format!("{name}/{}", path.join("/"));
        if path.is_empty() {
            return Err(MetainfoError::UnsafePath {
                path: shown,
                why: "empty path",
            });
        }
        for c in &path {
            check_component(c, &shown)?;
        }
        let pad = f
            .get(b"attr")
            .and_then(Value::as_bytes)
            .is_some_and(|a| a.contains(&b'p'));
        if !pad && !seen.insert(path.clone()) {
            return Err(MetainfoError::DuplicatePath(shown));
        }
        out.push(FileInfo { path, length, pad });
    }
    // A file may not also be a folder of another file ("a" and "a/b").
    for f in out.iter().filter(|f| !f.pad) {
        for i in 1..f.path.len() {
            if seen.contains(&f.path[..i]) {
                return Err(MetainfoError::UnsafePath {
                    path: format!("{name}/{}", f.path[..i].join("/")),
                    why: "is both a file and a folder",
                });
            }
        }
    }
    Ok(out)
}

/// Refuses a path component that could escape the output folder or that no
/// filesystem can hold.
pub fn check_component(c: &str, shown: &str) -> Result<(), MetainfoError> {
    let why = if c.is_empty() {
        Some("empty component")
    } else if c == "." || c == ".." {
        Some("`.` or `..` component")
    } else if c.contains('/') || c.contains('\\') {
        Some("slash inside a component")
    } else if c.contains('\0') {
        Some("NUL byte")
    } else if c.len() >= 2 && c.as_bytes()[1] == b':' && c.as_bytes()[0].is_ascii_alphabetic() {
        Some("drive letter")
    } else if c.len() > MAX_COMPONENT_LEN {
        Some("component longer than 255 bytes")
    } else {
        None
    };
    match why {
        Some(why) => Err(MetainfoError::UnsafePath {
            path: shown.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// What a new torrent holds, for [`encode_info`].
#[derive(Debug, Clone)]
pub struct NewInfo {
    pub name: String,
    pub piece_length: u32,
    /// SHA-1 of each piece, in order.
    pub pieces: Vec<[u8; 20]>,
    /// `None` for a single-file torrent of `length` bytes; `Some` for a folder.
    pub files: Option<Vec<(Vec<String>, u64)>>,
    pub length: u64,
    pub private: bool,
}

/// Encodes a v1 `info` dictionary.
pub fn encode_info(new: &NewInfo) -> Vec<u8> {
    let mut pieces = Vec::with_capacity(new.pieces.len() * 20);
    for p in &new.pieces {
        pieces.extend_from_slice(p);
    }
    let mut info = OwnedValue::dict()
        .with("name", new.name.as_str())
        .with("piece length", i64::from(new.piece_length))
        .with("pieces", pieces);
    match &new.files {
        None => info.insert("length", new.length as i64),
        Some(files) => {
            let list = files
                .iter()
                .map(|(path, len)| {
                    OwnedValue::dict().with("length", *len as i64).with(
                        "path",
                        path.iter()
                            .map(|c| OwnedValue::from(c.as_str()))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>();
            info.insert("files", list);
        }
    }
    if new.private {
        info.insert("private", 1);
    }
    info.encode()
}

/// Encodes a whole .torrent around raw `info` bytes.
pub fn encode_torrent(
    info_bytes: &[u8],
    trackers: &[Vec<String>],
    comment: Option<&str>,
    created_by: Option<&str>,
    creation_date: Option<i64>,
) -> Vec<u8> {
    // Keys in sorted order, `info` spliced in raw.
    let mut out = vec![b'd'];
    if let Some(first) = trackers.first().and_then(|t| t.first()) {
        bencode::put_bytes(&mut out, b"announce");
        bencode::put_bytes(&mut out, first.as_bytes());
    }
    if trackers.len() > 1 || trackers.first().is_some_and(|t| t.len() > 1) {
        bencode::put_bytes(&mut out, b"announce-list");
        let tiers: Vec<OwnedValue> = trackers
            .iter()
            .map(|t| OwnedValue::List(t.iter().map(|u| OwnedValue::from(u.as_str())).collect()))
            .collect();
        OwnedValue::List(tiers).encode_into(&mut out);
    }
    if let Some(c) = comment {
        bencode::put_bytes(&mut out, b"comment");
        bencode::put_bytes(&mut out, c.as_bytes());
    }
    if let Some(c) = created_by {
        bencode::put_bytes(&mut out, b"created by");
        bencode::put_bytes(&mut out, c.as_bytes());
    }
    if let Some(d) = creation_date {
        bencode::put_bytes(&mut out, b"creation date");
        bencode::put_int(&mut out, d);
    }
    bencode::put_bytes(&mut out, b"info");
    out.extend_from_slice(info_bytes);
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torrent_with_files(files: &str) -> Vec<u8> {
        let info = format!(
            "d5:filesl{files}e4:name4:root12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae"
        );
        format!("d8:announce3:x:y4:info{info}e").into_bytes()
    }

    #[test]
    fn single_file_round_trip() {
        let new = NewInfo {
            name: "a.bin".into(),
            piece_length: 16384,
            pieces: vec![[1; 20], [2; 20]],
            files: None,
            length: 20000,
            private: true,
        };
        let info = encode_info(&new);
        let trackers = vec![
            vec!["http://t/a".to_string()],
            vec!["udp://u:1".to_string()],
        ];
        let bytes = encode_torrent(&info, &trackers, Some("hi"), Some("essaim"), Some(5));
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info_hash, InfoHash::of_info(&info));
        assert_eq!(m.info.name, "a.bin");
        assert!(m.info.private);
        assert!(!m.info.multi_file);
        assert_eq!(m.info.total_length(), 20000);
        assert_eq!(m.trackers, trackers);
        assert_eq!(m.comment.as_deref(), Some("hi"));
        assert_eq!(m.creation_date, Some(5));
        assert_eq!(m.to_torrent_bytes(), bytes);
        assert!(m.magnet().starts_with("magnet:?xt=urn:btih:"));
    }

    #[test]
    fn multi_file_with_empty_file() {
        let b = torrent_with_files(
            "d6:lengthi10e4:pathl1:a1:bee d6:lengthi0e4:pathl1:cee"
                .replace(' ', "")
                .as_str(),
        );
        let m = Metainfo::from_bytes(&b).unwrap();
        assert!(m.info.multi_file);
        assert_eq!(m.info.files.len(), 2);
        assert_eq!(m.info.files[0].path, vec!["a", "b"]);
        assert_eq!(m.trackers, vec![vec!["x:y".to_string()]]);
    }

    #[test]
    fn refuses_unsafe_paths() {
        for bad in [
            "d6:lengthi10e4:pathl2:..1:bee",
            "d6:lengthi10e4:pathl0:1:bee",
            "d6:lengthi10e4:pathl3:a/bee",
            "d6:lengthi10e4:pathl3:a\\bee",
            "d6:lengthi10e4:pathl3:a\0bee",
            "d6:lengthi10e4:pathl2:C:ee",
            "d6:lengthi10e4:pathlee",
        ] {
            let err = Metainfo::from_bytes(&torrent_with_files(bad)).unwrap_err();
            assert!(
                matches!(err, MetainfoError::UnsafePath { .. }),
                "{bad}: {err}"
            );
        }
        let dup = torrent_with_files("d6:lengthi5e4:pathl1:aeed6:lengthi5e4:pathl1:aee");
        assert!(matches!(
            Metainfo::from_bytes(&dup),
            Err(MetainfoError::DuplicatePath(_))
        ));
        let file_and_dir =
            torrent_with_files("d6:lengthi5e4:pathl1:aeed6:lengthi5e4:pathl1:a1:bee");
        assert!(matches!(
            Metainfo::from_bytes(&file_and_dir),
            Err(MetainfoError::UnsafePath { .. })
        ));
        let long = format!("d6:lengthi10e4:pathl300:{}ee", "x".repeat(300));
        assert!(matches!(
            Metainfo::from_bytes(&torrent_with_files(&long)),
            Err(MetainfoError::UnsafePath { .. })
        ));
    }

    /// The bencode policy (see `bencode`) holds for .torrent files: hostile
    /// values anywhere in the file are refused, keys out of order are
    /// accepted (the infohash is still taken over the raw `info` bytes),
    /// a repeated key and trailing bytes are refused.
    #[test]
    fn bencode_policy_at_the_torrent_entry_point() {
        use crate::bencode::DecodeErrorKind as K;
        let info = "d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let good = format!("d8:announce3:x:y4:info{info}e");
        assert!(Metainfo::from_bytes(good.as_bytes()).is_ok());
        let kind = |bytes: &[u8]| match Metainfo::from_bytes(bytes) {
            Err(MetainfoError::Bencode(e)) => e.kind,
            other => panic!("expected a bencode error, got {other:?}"),
        };
        let mut deep = "l".repeat(100_000);
        deep.push_str(&"e".repeat(100_000));
        for (value, want) in [
            (deep.as_str(), K::TooDeep),
            ("9223372036854775808:x", K::InvalidLength),
            ("18446744073709551617:x", K::InvalidLength),
            ("i03e", K::InvalidInteger),
            ("i-0e", K::InvalidInteger),
        ] {
            // At the root, and inside `info` (where it would change the hash).
            let at_root = format!("d8:announce3:x:y4:info{info}1:z{value}e");
            assert_eq!(kind(at_root.as_bytes()), want, "root: {:.40}", value);
            let in_info = format!(
                "d8:announce3:x:y4:infod6:lengthi5e4:name1:x12:piece lengthi16384e\
                 6:pieces20:aaaaaaaaaaaaaaaaaaaa1:z{value}ee"
            );
            assert_eq!(kind(in_info.as_bytes()), want, "info: {:.40}", value);
        }
        // Repeated keys: at the root, in `info`, out of order.
        let dup_root = format!("d8:announce3:x:y8:announce3:a:b4:info{info}e");
        assert_eq!(kind(dup_root.as_bytes()), K::DuplicateKey);
        let dup_info = "d4:infod6:lengthi5e6:lengthi6e4:name1:x12:piece lengthi16384e\
                        6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert_eq!(kind(dup_info.as_bytes()), K::DuplicateKey);
        let dup_apart = format!("d8:announce3:x:y4:info{info}8:announce3:a:be");
        assert_eq!(kind(dup_apart.as_bytes()), K::DuplicateKey);
        // Out of order: accepted, hash over the raw bytes as received.
        let unsorted_info =
            "d6:pieces20:aaaaaaaaaaaaaaaaaaaa4:name1:x6:lengthi5e12:piece lengthi16384ee";
        let unsorted = format!("d4:info{unsorted_info}8:announce3:x:ye");
        let m = Metainfo::from_bytes(unsorted.as_bytes()).unwrap();
        assert_eq!(m.info_hash, InfoHash::of_info(unsorted_info.as_bytes()));
        assert_eq!(m.info.total_length(), 5);
        assert_eq!(m.trackers, vec![vec!["x:y".to_string()]]);
        // Trailing bytes: refused (a .torrent is exactly one dictionary).
        let trailing = format!("{good}\n");
        assert_eq!(kind(trailing.as_bytes()), K::TrailingBytes);
        // The same policy for info bytes fetched from peers (BEP 9).
        assert!(matches!(
            Metainfo::from_info_bytes(format!("{info}x").as_bytes(), vec![]),
            Err(MetainfoError::Bencode(_))
        ));
        assert!(matches!(
            Metainfo::from_info_bytes(&dup_info.as_bytes()[7..dup_info.len() - 1], vec![]),
            Err(MetainfoError::Bencode(_))
        ));
    }

    /// essaim accepts piece lengths that are not powers of two, as
    /// libtorrent and Transmission do (BEP 3 only says "almost always a
    /// power of two"); blocks are then cut at 16 KiB with a short last one.
    #[test]
    fn accepts_piece_lengths_that_are_not_powers_of_two() {
        for (pl, len, pieces) in [
            (20_000u32, 50_000u64, 3usize),
            (49_152, 49_153, 2),
            (1, 3, 3),
        ] {
            let hashes = "a".repeat(20 * pieces);
            let t = format!(
                "d4:infod6:lengthi{len}e4:name1:x12:piece lengthi{pl}e6:pieces{}:{hashes}ee",
                hashes.len()
            );
            let m = Metainfo::from_bytes(t.as_bytes()).unwrap();
            assert_eq!(m.info.piece_length, pl);
            assert_eq!(m.info.pieces.len(), pieces);
            let layout = &m.info.layout;
            let last = pieces as u32 - 1;
            assert_eq!(
                layout.piece_size(last),
                Some((len - u64::from(pl) * u64::from(last)) as u32)
            );
        }
        let m = Metainfo::from_bytes(
            b"d4:infod6:lengthi50000e4:name1:x12:piece lengthi20000e6:pieces60:\
              aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaee",
        )
        .unwrap();
        // 20,000 = one 16 KiB block and one of 3,616 bytes.
        assert_eq!(m.info.layout.blocks_in_piece(0), Some(2));
        assert_eq!(m.info.layout.block(0, 1), Some((16_384, 3_616)));
        assert_eq!(m.info.layout.block(2, 0), Some((0, 10_000)));
    }

    #[test]
    fn torrent_name_rules() {
        let single = |name: &str| {
            let mut t = b"d4:infod6:lengthi5e4:name".to_vec();
            bencode::put_bytes(&mut t, name.as_bytes());
            t.extend_from_slice(b"12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee");
            Metainfo::from_bytes(&t)
        };
        for (name, why) in [
            (".", "`.` or `..` component"),
            ("..", "`.` or `..` component"),
            ("", "empty component"),
            ("/etc/passwd", "slash inside a component"),
            ("..\\x", "slash inside a component"),
            ("C:", "drive letter"),
            ("c:\\windows", "slash inside a component"),
            ("a\0b", "NUL byte"),
        ] {
            match single(name) {
                Err(MetainfoError::UnsafePath { path, why: w }) => {
                    assert_eq!(path, name);
                    assert_eq!(w, why, "{name:?}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        let long = "n".repeat(5000);
        assert!(matches!(
            single(&long),
            Err(MetainfoError::UnsafePath {
                why: "component longer than 255 bytes",
                ..
            })
        ));
        // 255 bytes is the most a component may have (counted in bytes).
        assert!(single(&"n".repeat(255)).is_ok());
        assert!(single(&"é".repeat(128)).is_err());
        // Names the filesystem takes literally are fine.
        for ok in ["...", ".hidden", "ab:c", "con", " ", "x..y"] {
            assert!(single(ok).is_ok(), "{ok:?}");
        }
        // Names that differ only in case are two files (as on Linux).
        let t = torrent_with_files("d6:lengthi5e4:pathl5:A.txteed6:lengthi5e4:pathl5:a.txtee");
        let m = Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.info.files.len(), 2);
        // A path error names the whole path under the torrent's folder.
        let err = Metainfo::from_bytes(&torrent_with_files(
            "d6:lengthi10e4:pathl3:sub2:..6:passwdee",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("root/sub/../passwd"), "{err}");
    }

    #[test]
    fn refuses_bad_geometry() {
        let base = |pl: &str, pieces: &str, len: &str| {
            format!("d4:infod6:lengthi{len}e4:name1:x12:piece lengthi{pl}e6:pieces{pieces}ee")
                .into_bytes()
        };
        let p20 = "20:aaaaaaaaaaaaaaaaaaaa";
        assert!(matches!(
            Metainfo::from_bytes(&base("0", p20, "5")),
            Err(MetainfoError::Layout(_))
        ));
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", "19:aaaaaaaaaaaaaaaaaaa", "5")),
            Err(MetainfoError::PiecesLength(19))
        ));
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", p20, "40000")),
            Err(MetainfoError::PieceCount { .. })
        ));
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", "0:", "0")),
            Err(MetainfoError::Empty)
        ));
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", p20, "-1")),
            Err(MetainfoError::Invalid(_))
        ));
        // Total size overflowing u64 across files.
        let over = torrent_with_files("d6:lengthi9223372036854775807e4:pathl1:aeed6:lengthi9223372036854775807e4:pathl1:beed6:lengthi9223372036854775807e4:pathl1:cee");
        assert_eq!(
            Metainfo::from_bytes(&over),
            Err(MetainfoError::Layout(LayoutError::Overflow))
        );
        // Two files of 2^63 - 1 bytes and one of 2: exactly 2^64, one past u64.
        let just_over = torrent_with_files("d6:lengthi9223372036854775807e4:pathl1:aeed6:lengthi9223372036854775807e4:pathl1:beed6:lengthi2e4:pathl1:cee");
        assert_eq!(
            Metainfo::from_bytes(&just_over),
            Err(MetainfoError::Layout(LayoutError::Overflow))
        );
        // A size that fits u64 but needs more than 2^32 - 1 pieces.
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", p20, "9223372036854775807")),
            Err(MetainfoError::Layout(LayoutError::TooManyPieces(_)))
        ));
        // A length beyond i64 is not an integer bencode accepts.
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", p20, "18446744073709551616")),
            Err(MetainfoError::Bencode(_))
        ));
        // Piece length: 0, negative, above 64 MiB, beyond 32 bits.
        for pl in ["0", "67108865", "4294967296"] {
            assert!(
                matches!(
                    Metainfo::from_bytes(&base(pl, p20, "5")),
                    Err(MetainfoError::Layout(LayoutError::PieceLength(_)))
                ),
                "piece length {pl}"
            );
        }
        assert_eq!(
            Metainfo::from_bytes(&base("-16384", p20, "5")),
            Err(MetainfoError::Invalid("piece length"))
        );
        // `pieces` not a multiple of 20, either way.
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", "21:aaaaaaaaaaaaaaaaaaaaa", "5")),
            Err(MetainfoError::PiecesLength(21))
        ));
        assert!(matches!(
            Metainfo::from_bytes(&base("16384", "1:a", "5")),
            Err(MetainfoError::PiecesLength(1))
        ));
    }
}
