//! Path safety: hostile file and torrent names, built by hand as bencode.
//!
//! For each hostile torrent, either parsing refuses it with an error that
//! names the path, or it is accepted and laid out and written in full by
//! [`Storage`]; then a walk of a sandbox that holds the output folder (and a
//! bystander folder next to it) shows that nothing was created, changed or
//! removed outside the output folder, and that no symbolic link appeared.
//!
//! Decisions asserted here: names that differ only in case are two files
//! (as on Linux and in Transmission); a torrent named `.essaim` parses but
//! storage refuses it (that folder holds essaim's resume data); a path
//! whose components are each fine but which is longer than the system
//! allows as a whole is refused by storage with an error naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use essaim::storage::Storage;
use essaim_core::bencode::OwnedValue;
use essaim_core::Metainfo;
use sha1::{Digest, Sha1};

const PIECE: usize = 16 * 1024;

/// One file: path components (raw bytes), length, BEP 47 padding?
struct File {
    path: Vec<Vec<u8>>,
    len: usize,
    pad: bool,
    /// `path.utf-8`, which takes precedence over `path` when present.
    path_utf8: Option<Vec<Vec<u8>>>,
}

fn file(path: &[&[u8]], len: usize) -> File {
    File {
        path: path.iter().map(|c| c.to_vec()).collect(),
        len,
        pad: false,
        path_utf8: None,
    }
}

enum Shape {
    Single(usize),
    Multi(Vec<File>),
}

/// What must happen to a torrent.
enum Expect {
    /// Parsing refuses it; the error contains this text (the path).
    Refused(String),
    /// Parsing accepts it; storage refuses it with an error containing
    /// this text.
    StorageRefuses(String),
    /// Accepted and written: these paths (relative to the output folder)
    /// hold these many bytes afterwards.
    Written(Vec<(PathBuf, usize)>),
}

struct Case {
    what: &'static str,
    name: Vec<u8>,
    name_utf8: Option<Vec<u8>>,
    shape: Shape,
    expect: Expect,
}

fn content_of(total: usize) -> Vec<u8> {
    (0..total).map(|i| (i * 31 % 251) as u8).collect()
}

fn list(components: &[Vec<u8>]) -> OwnedValue {
    OwnedValue::List(components.iter().map(|c| c.clone().into()).collect())
}

/// The .torrent bytes, with correct piece hashes over zeros for padding.
fn torrent_bytes(case: &Case) -> (Vec<u8>, Vec<u8>) {
    let total = match &case.shape {
        Shape::Single(len) => *len,
        Shape::Multi(files) => files.iter().map(|f| f.len).sum(),
    };
    let mut content = content_of(total);
    if let Shape::Multi(files) = &case.shape {
        let mut at = 0;
        for f in files {
            if f.pad {
                content[at..at + f.len].fill(0);
            }
            at += f.len;
        }
    }
    let pieces: Vec<u8> = content
        .chunks(PIECE)
        .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
        .collect();
    let mut info = OwnedValue::dict()
        .with("name", case.name.clone())
        .with("piece length", PIECE as i64)
        .with("pieces", pieces);
    if let Some(n) = &case.name_utf8 {
        info.insert("name.utf-8", n.clone());
    }
    match &case.shape {
        Shape::Single(len) => info.insert("length", *len as i64),
        Shape::Multi(files) => {
            let files: Vec<OwnedValue> = files
                .iter()
                .map(|f| {
                    let mut d = OwnedValue::dict()
                        .with("length", f.len as i64)
                        .with("path", list(&f.path));
                    if let Some(p) = &f.path_utf8 {
                        d.insert("path.utf-8", list(p));
                    }
                    if f.pad {
                        d.insert("attr", "p");
                    }
                    d
                })
                .collect();
            info.insert("files", files);
        }
    }
    let torrent = OwnedValue::dict()
        .with("announce", "http://127.0.0.1:1/announce")
        .with("info", info)
        .encode();
    (torrent, content)
}

/// Everything under `root`, by relative path: kind and size (links are
/// not followed).
fn walk(root: &Path) -> BTreeMap<PathBuf, (&'static str, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let kind = if m.file_type().is_symlink() {
                "link"
            } else if m.is_dir() {
                stack.push(path.clone());
                "dir"
            } else {
                "file"
            };
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (kind, if kind == "file" { m.len() } else { 0 }));
        }
    }
    out
}

/// Runs one case in its own sandbox: `sandbox/out` is the output folder,
/// `sandbox/bystander` holds a file that must stay as it is.
fn run(case: &Case) {
    let sandbox = tempfile::tempdir().unwrap();
    let out = sandbox.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(sandbox.path().join("bystander")).unwrap();
    std::fs::write(sandbox.path().join("bystander/keep"), b"keep me").unwrap();
    std::fs::write(sandbox.path().join("evil"), b"original").unwrap();
    let before = walk(sandbox.path());

    let (bytes, content) = torrent_bytes(case);
    let parsed = Metainfo::from_bytes(&bytes);
    match (&case.expect, parsed) {
        (Expect::Refused(shown), Err(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(shown.as_str()),
                "{}: the error should name {shown:?}: {msg}",
                case.what
            );
        }
        (Expect::Refused(_), Ok(m)) => panic!(
            "{}: parsed, but must be refused: {:?}",
            case.what, m.info.files
        ),
        (_, Err(e)) => panic!("{}: refused, but must parse: {e}", case.what),
        (Expect::StorageRefuses(shown), Ok(m)) => match Storage::open(&out, &m.info) {
            Ok(_) => panic!("{}: storage accepted {:?}", case.what, m.info.files),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(shown.as_str()),
                    "{}: the error should name {shown:?}: {msg}",
                    case.what
                );
            }
        },
        (Expect::Written(expected), Ok(m)) => {
            let storage = Storage::open(&out, &m.info)
                .unwrap_or_else(|e| panic!("{}: storage refused: {e}", case.what));
            let layout = &m.info.layout;
            for p in 0..layout.num_pieces() {
                let start = layout.piece_offset(p).unwrap() as usize;
                let end = start + layout.piece_size(p).unwrap() as usize;
                storage.write_piece(p, &content[start..end]).unwrap();
            }
            let full = essaim_core::Bitfield::full(layout.num_pieces());
            storage.save_resume(&m.info_hash, &full, true).unwrap();
            let have = storage.recheck(&|_| {}).unwrap();
            assert!(have.is_full(), "{}: not all pieces verify", case.what);
            let written = walk(&out);
            for (rel, len) in expected {
                assert_eq!(
                    written.get(rel),
                    Some(&("file", *len as u64)),
                    "{}: {} should be a file of {len} bytes; found {written:?}",
                    case.what,
                    rel.display()
                );
            }
        }
    }

    // Outside `out`: exactly as before; inside: no link.
    let after = walk(sandbox.path());
    let outside = |m: &BTreeMap<PathBuf, (&'static str, u64)>| -> Vec<_> {
        m.iter()
            .filter(|(p, _)| !p.starts_with("out") || p.as_os_str() == "out")
            .map(|(p, v)| (p.clone(), *v))
            .collect()
    };
    assert_eq!(
        outside(&after),
        outside(&before),
        "{}: something changed outside the output folder",
        case.what
    );
    assert_eq!(
        std::fs::read(sandbox.path().join("evil")).unwrap(),
        b"original"
    );
    assert_eq!(
        std::fs::read(sandbox.path().join("bystander/keep")).unwrap(),
        b"keep me"
    );
    for (p, (kind, _)) in &after {
        assert_ne!(
            *kind,
            "link",
            "{}: a link appeared at {}",
            case.what,
            p.display()
        );
    }
}

fn refused(what: &'static str, files: Vec<File>, shown: &str) -> Case {
    Case {
        what,
        name: b"root".to_vec(),
        name_utf8: None,
        shape: Shape::Multi(files),
        expect: Expect::Refused(shown.to_owned()),
    }
}

fn named(what: &'static str, name: &[u8], expect: Expect) -> Case {
    Case {
        what,
        name: name.to_vec(),
        name_utf8: None,
        shape: Shape::Single(1000),
        expect,
    }
}

#[test]
fn hostile_file_names_are_refused_naming_the_path() {
    let long = vec![b'n'; 5000];
    let cases = vec![
        refused("dot-dot", vec![file(&[b"..", b"evil"], 10)], "root/../evil"),
        refused(
            "dot-dot deeper",
            vec![file(&[b"a", b"..", b"..", b"evil"], 10)],
            "root/a/../../evil",
        ),
        refused("dot", vec![file(&[b".", b"evil"], 10)], "root/./evil"),
        refused(
            "absolute path in one component",
            vec![file(&[b"/etc/passwd"], 10)],
            "root//etc/passwd",
        ),
        refused(
            "absolute path as a leading empty component",
            vec![file(&[b"", b"etc", b"passwd"], 10)],
            "root//etc/passwd",
        ),
        refused(
            "drive letter",
            vec![file(&[b"C:", b"evil"], 10)],
            "root/C:/evil",
        ),
        refused(
            "drive-relative",
            vec![file(&[b"c:evil"], 10)],
            "root/c:evil",
        ),
        refused(
            "backslashes",
            vec![file(&[b"..\\..\\evil"], 10)],
            "root/..\\\\..\\\\evil",
        ),
        refused(
            "NUL byte",
            vec![file(&[b"evil\0.txt"], 10)],
            "root/evil\\0.txt",
        ),
        refused(
            "empty component in the middle",
            vec![file(&[b"a", b"", b"b"], 10)],
            "root/a//b",
        ),
        refused("empty path", vec![file(&[], 10)], "root/"),
        refused(
            "component of 5,000 bytes",
            vec![file(&[b"a", &long], 10)],
            "root/a/nnnnnnnnnnnnnnnnnnnn",
        ),
        refused(
            "two files with the same path",
            vec![
                file(&[b"a", b"x"], 10),
                file(&[b"b"], 3),
                file(&[b"a", b"x"], 5),
            ],
            "root/a/x",
        ),
        refused(
            "same path once invalid UTF-8 is replaced",
            vec![file(&[b"\xff"], 10), file(&[b"\xfe"], 5)],
            "root/\u{fffd}",
        ),
        refused(
            "a file and a folder with the same name",
            vec![file(&[b"a", b"b"], 10), file(&[b"a"], 5)],
            "root/a",
        ),
        refused(
            "a padding file with an unsafe path",
            vec![
                file(&[b"a"], 10),
                File {
                    pad: true,
                    ..file(&[b"..", b"pad"], 5)
                },
            ],
            "root/../pad",
        ),
        refused(
            "path.utf-8 unsafe while path looks fine",
            vec![File {
                path_utf8: Some(vec![b"..".to_vec(), b"evil".to_vec()]),
                ..file(&[b"fine"], 10)
            }],
            "root/../evil",
        ),
    ];
    for case in &cases {
        run(case);
    }
}

#[test]
fn hostile_torrent_names() {
    let cases = vec![
        named("name `.`", b".", Expect::Refused("\".\"".into())),
        named("name `..`", b"..", Expect::Refused("\"..\"".into())),
        named(
            "name `../evil`",
            b"../evil",
            Expect::Refused("../evil".into()),
        ),
        named("name `/evil`", b"/evil", Expect::Refused("/evil".into())),
        named("name empty", b"", Expect::Refused("\"\"".into())),
        named(
            "name of 5,000 bytes",
            &[b'n'; 5000],
            Expect::Refused("nnnnnnnnnnnnnnnnnnnn".into()),
        ),
        // Parses (a legal name), but it is where essaim keeps resume data.
        named(
            "name `.essaim`",
            b".essaim",
            Expect::StorageRefuses("out/.essaim".into()),
        ),
        Case {
            expect: Expect::Refused("..".into()),
            name_utf8: Some(b"..".to_vec()),
            ..named(
                "name.utf-8 `..` while name looks fine",
                b"fine",
                Expect::Refused(String::new()),
            )
        },
        Case {
            shape: Shape::Multi(vec![file(&[b"a"], 10)]),
            ..named(
                "multi-file torrent named `.essaim`",
                b".essaim",
                Expect::StorageRefuses("out/.essaim".into()),
            )
        },
    ];
    for case in &cases {
        run(case);
    }
}

#[test]
fn accepted_names_are_written_inside_the_output_folder_only() {
    let component = |c: u8| vec![c; 250];
    let deep: Vec<Vec<u8>> = (0..20).map(|i| component(b'a' + i)).collect();
    let deep_refs: Vec<&[u8]> = deep.iter().map(Vec::as_slice).collect();
    let cases = vec![
        // Two files, as Linux and Transmission have it.
        Case {
            what: "names that differ only in case",
            name: b"root".to_vec(),
            name_utf8: None,
            shape: Shape::Multi(vec![
                file(&[b"A.txt"], 20_000),
                file(&[b"a.txt"], 3),
                file(&[b"Sub", b"x"], 7),
                file(&[b"sub", b"x"], 9),
            ]),
            expect: Expect::Written(vec![
                ("root/A.txt".into(), 20_000),
                ("root/a.txt".into(), 3),
                ("root/Sub/x".into(), 7),
                ("root/sub/x".into(), 9),
            ]),
        },
        Case {
            what: "names the filesystem takes literally",
            name: b"...".to_vec(),
            name_utf8: None,
            shape: Shape::Multi(vec![
                file(&[b".hidden"], 5),
                file(&[b"a\xe2\x88\x95b"], 5), // U+2215 DIVISION SLASH
                file(&[b"x..y", b"...."], 5),
                file(&[b" "], 5),
                file(&[b"ab:c"], 5),
            ]),
            expect: Expect::Written(vec![
                (".../.hidden".into(), 5),
                (".../a\u{2215}b".into(), 5),
                (".../x..y/....".into(), 5),
                (".../ ".into(), 5),
                (".../ab:c".into(), 5),
            ]),
        },
        Case {
            what: "padding files never reach the disk",
            name: b"root".to_vec(),
            name_utf8: None,
            shape: Shape::Multi(vec![
                file(&[b"a"], 100),
                File {
                    pad: true,
                    ..file(&[b".pad", b"16284"], PIECE - 100)
                },
                file(&[b"b"], 100),
            ]),
            expect: Expect::Written(vec![("root/a".into(), 100), ("root/b".into(), 100)]),
        },
        // 20 components of 250 bytes: each is fine, the whole is longer
        // than PATH_MAX; storage refuses it with an error naming it.
        Case {
            what: "a path of 5,000 bytes",
            name: b"root".to_vec(),
            name_utf8: None,
            shape: Shape::Multi(vec![file(&deep_refs, 10)]),
            expect: Expect::StorageRefuses("root/aaaaaaaaaa".into()),
        },
    ];
    for case in &cases {
        run(case);
    }
    // Padding files were not created.
    let sandbox = tempfile::tempdir().unwrap();
    let (bytes, _) = torrent_bytes(&cases[2]);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    Storage::open(sandbox.path(), &m.info).unwrap();
    assert!(!sandbox.path().join("root/.pad").exists());
}

/// Storage checks paths again: an `Info` built in code, bypassing the
/// parser's checks, cannot make it write outside the output folder.
#[test]
fn storage_refuses_unsafe_paths_that_bypass_the_parser() {
    let case = Case {
        what: "template",
        name: b"root".to_vec(),
        name_utf8: None,
        shape: Shape::Multi(vec![file(&[b"a"], 10), file(&[b"b"], 10)]),
        expect: Expect::Written(vec![]),
    };
    let (bytes, _) = torrent_bytes(&case);
    let good = Metainfo::from_bytes(&bytes).unwrap();
    let hostile: Vec<Vec<&str>> = vec![
        vec!["..", "evil"],
        vec!["/evil"],
        vec!["a", "..", "..", "evil"],
        vec![""],
        vec![],
        vec!["."],
        vec!["x\0y"],
        vec!["..\\evil"],
    ];
    for path in hostile {
        let sandbox = tempfile::tempdir().unwrap();
        let out = sandbox.path().join("out");
        std::fs::write(sandbox.path().join("evil"), b"original").unwrap();
        let before = walk(sandbox.path());
        let mut info = good.info.clone();
        info.files[1].path = path.iter().map(|s| s.to_string()).collect();
        let err = Storage::open(&out, &info).expect_err(&format!("{path:?}"));
        assert!(
            matches!(err, essaim::storage::StorageError::UnsafePath { .. }),
            "{path:?}: {err}"
        );
        let mut after = walk(sandbox.path());
        after.retain(|p, _| !p.starts_with("out"));
        let mut before = before;
        before.retain(|p, _| !p.starts_with("out"));
        assert_eq!(after, before, "{path:?}");
        assert_eq!(
            std::fs::read(sandbox.path().join("evil")).unwrap(),
            b"original"
        );
        // And the name itself.
        let mut info = good.info.clone();
        info.name = path.join("/");
        assert!(Storage::open(&out, &info).is_err(), "name {path:?}");
        assert_eq!(
            std::fs::read(sandbox.path().join("evil")).unwrap(),
            b"original"
        );
    }
}
