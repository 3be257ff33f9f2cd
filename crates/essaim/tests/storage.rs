//! Storage and resume data against a real filesystem.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use essaim::storage::{Storage, StorageError};
use essaim_core::bencode::OwnedValue;
use essaim_core::{InfoHash, Metainfo};
use sha1::{Digest, Sha1};

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One file of a test torrent: path, length, padding?
type Spec<'a> = (&'a [&'a str], u64, bool);

/// A multi-file torrent over `files` with the given content (padding bytes
/// in `content` must be zero) and its piece hashes.
fn torrent(name: &str, piece_len: u32, files: &[Spec<'_>], content: &[u8]) -> Metainfo {
    let pieces: Vec<u8> = content
        .chunks(piece_len as usize)
        .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
        .collect();
    let list: Vec<OwnedValue> = files
        .iter()
        .map(|(path, len, pad)| {
            let mut d = OwnedValue::dict().with("length", *len as i64).with(
                "path",
                path.iter()
                    .map(|c| OwnedValue::from(*c))
                    .collect::<Vec<_>>(),
            );
            if *pad {
                d.insert("attr", "p");
            }
            d
        })
        .collect();
    let info = OwnedValue::dict()
        .with("name", name)
        .with("piece length", i64::from(piece_len))
        .with("pieces", pieces)
        .with("files", list)
        .encode();
    let bytes = essaim_core::metainfo::encode_torrent(&info, &[], None, None, None);
    Metainfo::from_bytes(&bytes).unwrap()
}

fn single(name: &str, piece_len: u32, content: &[u8]) -> Metainfo {
    let new = essaim_core::metainfo::NewInfo {
        name: name.into(),
        piece_length: piece_len,
        pieces: content
            .chunks(piece_len as usize)
            .map(|c| Sha1::digest(c).into())
            .collect(),
        files: None,
        length: content.len() as u64,
        private: false,
    };
    let info = essaim_core::metainfo::encode_info(&new);
    Metainfo::from_bytes(&essaim_core::metainfo::encode_torrent(
        &info,
        &[],
        None,
        None,
        None,
    ))
    .unwrap()
}

const PL: u32 = 16384;
// Piece 1 spans one.bin, (empty.txt), two.bin, three.bin and four.bin;
// the last piece is 55100 - 49152 = 5948 bytes.
const FILES: &[Spec<'static>] = &[
    (&["a", "one.bin"], 20000, false),
    (&["empty.txt"], 0, false),
    (&["a", "b", "two.bin"], 5000, false),
    (&["three.bin"], 100, false),
    (&["four.bin"], 30000, false),
];
const TOTAL: usize = 55100;

fn piece(content: &[u8], p: u32) -> &[u8] {
    let start = (p * PL) as usize;
    &content[start..(start + PL as usize).min(content.len())]
}

fn write_all(s: &Storage, m: &Metainfo, content: &[u8]) {
    for p in 0..m.info.layout.num_pieces() {
        s.write_piece(p, piece(content, p)).unwrap();
    }
}

fn recheck_set(s: &Storage) -> Vec<u32> {
    s.recheck(&|_| {}).unwrap().iter_set().collect()
}

#[test]
fn multi_file_layout_write_read_verify() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(TOTAL, 1);
    let m = torrent("multi", PL, FILES, &content);
    assert_eq!(m.info.layout.num_pieces(), 4);
    assert_eq!(m.info.layout.piece_size(3), Some(5948));
    let s = Storage::open(dir.path(), &m.info).unwrap();

    let base = dir.path().join("multi");
    let expected: Vec<PathBuf> = vec![
        base.join("a/one.bin"),
        base.join("empty.txt"),
        base.join("a/b/two.bin"),
        base.join("three.bin"),
        base.join("four.bin"),
    ];
    assert_eq!(s.file_paths(), expected);
    for (p, (_, len, _)) in expected.iter().zip(FILES) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        assert!(meta.is_file(), "{}", p.display());
        assert_eq!(meta.len(), *len, "{}", p.display());
    }
    // Sparse zeros are there but are not the data.
    assert!(!s.verify_piece(1).unwrap());

    write_all(&s, &m, &content);
    for p in 0..4 {
        assert!(s.verify_piece(p).unwrap(), "piece {p}");
    }
    // The bytes landed in the right files.
    let on_disk: Vec<u8> = expected
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(on_disk, content);

    // Reads across file boundaries.
    let got = s.read(1, 3000, 9000).unwrap();
    assert_eq!(&got[..], &content[PL as usize + 3000..PL as usize + 12000]);
    let got = s.read(3, 5000, 948).unwrap();
    assert_eq!(&got[..], &content[TOTAL - 948..]);

    // Out of range and wrong sizes are errors, not panics.
    assert!(matches!(
        s.read(3, 5000, 949),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.read(4, 0, 1),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.read(0, 0, 0),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.read(0, u32::MAX, 2),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.write_piece(3, &content[..PL as usize]),
        Err(StorageError::WrongSize { .. })
    ));
    assert!(matches!(
        s.write_piece(9, &[]),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.verify_piece(u32::MAX),
        Err(StorageError::OutOfRange { .. })
    ));

    // A corrupted byte fails only its piece.
    std::fs::write(base.join("three.bin"), vec![0u8; 100]).unwrap();
    assert!(!s.verify_piece(1).unwrap());
    assert_eq!(recheck_set(&s), vec![0, 2, 3]);
    s.sync().unwrap();
}

#[test]
fn open_keeps_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(TOTAL, 2);
    let m = torrent("keep", PL, FILES, &content);
    let base = dir.path().join("keep");
    std::fs::create_dir_all(base.join("a")).unwrap();
    // Longer than the torrent says: never truncated.
    std::fs::write(base.join("a/one.bin"), vec![7u8; 25000]).unwrap();
    // Shorter: extended, the start kept.
    std::fs::write(base.join("four.bin"), b"hello").unwrap();
    let s = Storage::open(dir.path(), &m.info).unwrap();
    assert_eq!(
        std::fs::read(base.join("a/one.bin")).unwrap(),
        vec![7u8; 25000]
    );
    let four = std::fs::read(base.join("four.bin")).unwrap();
    assert_eq!(four.len(), 30000);
    assert_eq!(&four[..5], b"hello");
    assert!(four[5..].iter().all(|&b| b == 0));
    // Opening twice is fine and changes nothing.
    drop(s);
    Storage::open(dir.path(), &m.info).unwrap();
    assert_eq!(std::fs::read(base.join("four.bin")).unwrap(), four);
}

#[test]
fn recheck_finds_exactly_the_pieces_written() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(TOTAL, 3);
    let m = torrent("re", PL, FILES, &content);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    s.write_piece(0, piece(&content, 0)).unwrap();
    s.write_piece(2, piece(&content, 2)).unwrap();
    let seen = Mutex::new(Vec::new());
    let have = s.recheck(&|d| seen.lock().unwrap().push(d)).unwrap();
    assert_eq!(have.iter_set().collect::<Vec<_>>(), vec![0, 2]);
    let mut seen = seen.into_inner().unwrap();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 4]);

    write_all(&s, &m, &content);
    assert!(s.recheck(&|_| {}).unwrap().is_full());
    // four.bin cut at 10000: piece 1 holds four.bin[..7668] and survives;
    // pieces 2 and 3 lose data and are missing, without an error.
    let base = dir.path().join("re");
    std::fs::OpenOptions::new()
        .write(true)
        .open(base.join("four.bin"))
        .unwrap()
        .set_len(10000)
        .unwrap();
    assert_eq!(recheck_set(&s), vec![0, 1]);
    assert!(!s.verify_piece(2).unwrap());
    assert!(matches!(
        s.read(3, 0, 10),
        Err(StorageError::NotPresent { .. })
    ));
    // A deleted file: its pieces are missing, still no error.
    std::fs::remove_file(base.join("three.bin")).unwrap();
    assert_eq!(recheck_set(&s), vec![0]);
    // Writing again recreates it.
    s.write_piece(1, piece(&content, 1)).unwrap();
    assert_eq!(recheck_set(&s), vec![0, 1]);
}

#[test]
fn recheck_many_small_and_few_big_pieces() {
    let dir = tempfile::tempdir().unwrap();
    // 700 pieces of 16 KiB over 7 files: several batches, all threads busy.
    let sizes = [
        1_000_000u64,
        3,
        2_500_000,
        0,
        4_000_000,
        1_700_000,
        2_268_797,
    ];
    let total: u64 = sizes.iter().sum();
    let content = data(total as usize, 4);
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("f{i}")).collect();
    let paths: Vec<[&str; 1]> = names.iter().map(|n| [n.as_str()]).collect();
    let specs: Vec<Spec<'_>> = paths
        .iter()
        .zip(sizes)
        .map(|(p, l)| (&p[..], l, false))
        .collect();
    let m = torrent("many", PL, &specs, &content);
    let n = m.info.layout.num_pieces();
    let s = Storage::open(dir.path(), &m.info).unwrap();
    for p in (0..n).filter(|p| p % 3 != 1) {
        s.write_piece(p, piece(&content, p)).unwrap();
    }
    let calls = AtomicU32::new(0);
    let max = AtomicU32::new(0);
    let have = s
        .recheck(&|d| {
            calls.fetch_add(1, Ordering::Relaxed);
            max.fetch_max(d, Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(
        have.iter_set().collect::<Vec<_>>(),
        (0..n).filter(|p| p % 3 != 1).collect::<Vec<_>>()
    );
    assert_eq!(calls.into_inner(), n);
    assert_eq!(max.into_inner(), n);

    // Pieces bigger than the read chunk are hashed in parts.
    let big = 8 << 20;
    let content = data((big + 1000) as usize, 5);
    let m = single("big.bin", big, &content);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    assert_eq!(recheck_set(&s), Vec::<u32>::new());
    s.write_piece(0, &content[..big as usize]).unwrap();
    s.write_piece(1, &content[big as usize..]).unwrap();
    assert_eq!(recheck_set(&s), vec![0, 1]);
    assert_eq!(s.file_paths(), vec![dir.path().join("big.bin")]);
}

#[test]
fn padding_files_stay_off_disk() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[Spec<'_>] = &[
        (&["x.bin"], 10000, false),
        (&[".pad", "6384"], 6384, true),
        (&["y.bin"], 5000, false),
    ];
    let mut content = data(21384, 6);
    content[10000..16384].fill(0);
    let m = torrent("padded", PL, files, &content);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    let base = dir.path().join("padded");
    assert_eq!(s.file_paths(), vec![base.join("x.bin"), base.join("y.bin")]);
    assert!(!base.join(".pad").exists());
    // Non-zero bytes written over padding are dropped; padding reads as zeros.
    let mut p0 = piece(&content, 0).to_vec();
    p0[12000] = 0xff;
    s.write_piece(0, &p0).unwrap();
    assert_eq!(&s.read(0, 9990, 20).unwrap()[..], &content[9990..10010]);
    assert!(s.verify_piece(0).unwrap());
    s.write_piece(1, piece(&content, 1)).unwrap();
    assert!(s.recheck(&|_| {}).unwrap().is_full());
    assert!(!base.join(".pad").exists());
}

/// Resume data after durable saves: nothing to verify again.
fn trusted(s: &Storage, info_hash: &InfoHash) -> Option<essaim_core::Bitfield> {
    s.load_resume(info_hash).map(|(have, verify)| {
        assert!(verify.none_set(), "durable saves leave nothing to verify");
        have
    })
}

#[test]
fn quick_resume_save_marks_unsynced_pieces_to_verify() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(TOTAL, 9);
    let m = torrent("quick", PL, FILES, &content);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    let n = m.info.layout.num_pieces();
    write_all(&s, &m, &content);
    let full = essaim_core::Bitfield::full(n);
    // Written, not synced: a quick save trusts none of it.
    s.save_resume(&m.info_hash, &full, false).unwrap();
    let (have, verify) = s.load_resume(&m.info_hash).unwrap();
    assert!(have.none_set());
    assert_eq!(verify, full);
    // The pieces to verify are hashed again: one spoilt behind our back
    // (same size, mtime put back) does not pass.
    let path = dir.path().join("quick/three.bin");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", 0).unwrap();
    f.set_modified(before).unwrap();
    let good = s.verify_pieces(&verify).unwrap();
    let spoilt = (0..n).filter(|&p| !good.get(p)).count();
    assert_eq!(
        spoilt, 1,
        "exactly the piece holding the changed byte fails"
    );
    // A durable save syncs first: everything is trusted.
    s.save_resume(&m.info_hash, &full, true).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), Some(full.clone()));
    // Written after that sync: to verify again.
    s.write_piece(0, piece(&content, 0)).unwrap();
    s.save_resume(&m.info_hash, &full, false).unwrap();
    let (have, verify) = s.load_resume(&m.info_hash).unwrap();
    assert!(!have.get(0) && verify.get(0) && verify.count() == 1);
}

#[test]
fn resume_round_trip_and_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(TOTAL, 7);
    let m = torrent("res", PL, FILES, &content);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), None);
    write_all(&s, &m, &content);
    let mut have = s.recheck(&|_| {}).unwrap();
    have.clear(2);
    s.save_resume(&m.info_hash, &have, true).unwrap();
    let path = s.resume_path(&m.info_hash);
    assert_eq!(
        path,
        dir.path()
            .join(".essaim")
            .join(format!("{}.resume", m.info_hash.to_hex()))
    );
    assert_eq!(trusted(&s, &m.info_hash), Some(have.clone()));
    // A fresh Storage on the same files agrees (a restart).
    drop(s);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), Some(have.clone()));
    // Another torrent's hash finds nothing.
    assert_eq!(trusted(&s, &InfoHash([1; 20])), None);
    // Saving again replaces the file (no temp file left behind).
    s.save_resume(&m.info_hash, &have, true).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path().join(".essaim"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1);

    // A file touched after the save: stale.
    let f = std::fs::File::options()
        .write(true)
        .open(dir.path().join("res/three.bin"))
        .unwrap();
    let t = f.metadata().unwrap().modified().unwrap();
    f.set_modified(t + std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(trusted(&s, &m.info_hash), None);
    s.save_resume(&m.info_hash, &have, true).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), Some(have.clone()));
    // A file grown after the save: stale.
    f.set_len(101).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), None);
    f.set_len(100).unwrap();
    s.save_resume(&m.info_hash, &have, true).unwrap();

    // Corrupt, truncated, empty and oversized files: None.
    let good = std::fs::read(&path).unwrap();
    for bad in [&good[..good.len() / 2], b"", b"garbage", &good[1..]] {
        std::fs::write(&path, bad).unwrap();
        assert_eq!(trusted(&s, &m.info_hash), None);
    }
    let huge = std::fs::File::create(&path).unwrap();
    huge.set_len(65 << 20).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), None);
    std::fs::write(&path, &good).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), Some(have.clone()));
    // A file deleted while running (after its handle was dropped by a
    // recheck): saving still works, but the resume data never vouches for
    // pieces of the missing file.
    s.write_piece(3, piece(&content, 3)).unwrap();
    std::fs::remove_file(dir.path().join("res/four.bin")).unwrap();
    s.recheck(&|_| {}).unwrap();
    s.save_resume(&m.info_hash, &have, true).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), None);
    let mut without = have.clone();
    for p in 1..4 {
        without.clear(p); // four.bin is in pieces 1 to 3
    }
    s.save_resume(&m.info_hash, &without, true).unwrap();
    assert_eq!(trusted(&s, &m.info_hash), Some(without));
    // A bitfield of the wrong length is refused on save.
    assert!(s
        .save_resume(&m.info_hash, &essaim_core::Bitfield::new(3), true)
        .is_err());
}

fn assert_outside_untouched(outside: &Path) {
    let entries: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep me");
}

#[test]
fn symlinks_in_place_of_our_paths_are_refused() {
    let content = data(TOTAL, 8);
    let m = torrent("sym", PL, FILES, &content);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"keep me").unwrap();

    // A folder of ours is a link to outside.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sym")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("sym/a")).unwrap();
    let err = Storage::open(dir.path(), &m.info).unwrap_err();
    assert!(matches!(err, StorageError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("sym/a"), "{err}");
    assert_outside_untouched(outside.path());

    // A file of ours is a link to an outside file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sym")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        dir.path().join("sym/four.bin"),
    )
    .unwrap();
    let err = Storage::open(dir.path(), &m.info).unwrap_err();
    assert!(err.to_string().contains("four.bin"), "{err}");
    assert_outside_untouched(outside.path());

    // The torrent's folder itself is a link.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("sym")).unwrap();
    assert!(matches!(
        Storage::open(dir.path(), &m.info),
        Err(StorageError::UnsafePath { .. })
    ));
    assert_outside_untouched(outside.path());

    // A link swapped in after opening: writes and reads refuse it.
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), &m.info).unwrap();
    let four = dir.path().join("sym/four.bin");
    std::fs::remove_file(&four).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), &four).unwrap();
    let err = s.write_piece(3, piece(&content, 3)).unwrap_err();
    assert!(matches!(err, StorageError::UnsafePath { .. }), "{err}");
    assert!(s.read(3, 0, 10).is_err());
    assert_outside_untouched(outside.path());

    // Single-file torrent whose file is a link.
    let dir = tempfile::tempdir().unwrap();
    let m = single("one.bin", PL, &content[..1000]);
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("one.bin")).unwrap();
    assert!(matches!(
        Storage::open(dir.path(), &m.info),
        Err(StorageError::UnsafePath { .. })
    ));
    assert_outside_untouched(outside.path());
}

#[test]
fn conflicts_and_reserved_names() {
    let content = data(TOTAL, 9);
    let m = torrent("c", PL, FILES, &content);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("c/four.bin")).unwrap();
    let err = Storage::open(dir.path(), &m.info).unwrap_err();
    assert!(matches!(err, StorageError::Conflict { .. }), "{err}");
    let m = torrent(".essaim", PL, FILES, &content);
    assert!(matches!(
        Storage::open(dir.path(), &m.info),
        Err(StorageError::UnsafePath { .. })
    ));
    // An Info whose fields disagree is refused, not trusted.
    let mut m = torrent("c2", PL, FILES, &content);
    m.info.pieces.pop();
    assert!(matches!(
        Storage::open(dir.path(), &m.info),
        Err(StorageError::BadInfo(_))
    ));
}

#[test]
fn read_many_merges_consecutive_blocks_and_keeps_order() {
    use essaim_wire::peer::BlockRequest;
    let dir = tempfile::tempdir().unwrap();
    let content = data(TOTAL, 11);
    let m = torrent("many", PL, FILES, &content);
    let s = Storage::open(dir.path(), &m.info).unwrap();
    write_all(&s, &m, &content);
    let layout = &m.info.layout;
    let at = |piece: u32, begin: u32, length: u32| BlockRequest {
        piece,
        begin,
        length,
    };
    let last = layout.num_pieces() - 1;
    let reqs = vec![
        at(0, 0, 100),
        at(0, 100, 50), // follows the first on disk
        at(1, 0, 10),   // across a piece boundary, not adjacent
        at(last, 0, 1),
        at(last + 1, 0, 1), // out of range
        at(0, 5, 5),        // back again
    ];
    let got = s.read_many(&reqs);
    assert_eq!(got.len(), reqs.len());
    for (r, g) in reqs.iter().zip(&got) {
        match layout.piece_offset(r.piece) {
            Some(o) if r.piece <= last => {
                let start = (o + u64::from(r.begin)) as usize;
                let want = &content[start..start + r.length as usize];
                assert_eq!(&g.as_ref().unwrap()[..], want, "{r:?}");
            }
            _ => assert!(g.is_err(), "{r:?} should be refused"),
        }
    }
}
