//! `essaim create` against a real filesystem: the torrents made parse back,
//! their hashes are checked independently and by `Storage::recheck`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use essaim::create::{create_torrent, CreateError, CreateOptions};
use essaim::storage::Storage;
use essaim_core::Metainfo;
use sha1::{Digest, Sha1};

const PL: u32 = 16384;

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

/// Hashes of `content` cut into pieces, computed independently.
fn hashes(content: &[u8], pl: u32) -> Vec<[u8; 20]> {
    content
        .chunks(pl as usize)
        .map(|c| Sha1::digest(c).into())
        .collect()
}

#[test]
fn create_folder_round_trips_through_storage() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("album");
    let files: &[(&str, usize)] = &[
        ("b.txt", 70_000),
        ("a/z.bin", 40_001),
        ("a.txt", 12),
        (".hidden", 3000),
        ("a/empty", 0),
        ("c/d/e.dat", 100_000),
    ];
    for (i, (p, len)) in files.iter().enumerate() {
        let path = src.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data(*len, 10 + i as u64)).unwrap();
    }
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();

    let last = Mutex::new((0u64, 0u64));
    let opts = CreateOptions {
        piece_length: Some(PL),
        trackers: vec![vec!["http://t.example/announce".into()]],
        private: true,
        comment: Some("test".into()),
        created_by: Some("essaim".into()),
        creation_date: Some(1_700_000_000),
    };
    let bytes = create_torrent(&src, &opts, &|done, total| {
        let mut l = last.lock().unwrap();
        assert!(done <= total);
        if done > l.0 {
            *l = (done, total);
        }
    })
    .unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.name, "album");
    assert!(m.info.multi_file && m.info.private);
    assert_eq!(m.info.piece_length, PL);
    assert_eq!(m.trackers, opts.trackers);
    assert_eq!(m.comment.as_deref(), Some("test"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
    // Sorted by path bytes ('.' < '/' so "a.txt" before "a/..."), link skipped.
    let paths: Vec<String> = m.info.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(
        paths,
        vec![
            ".hidden",
            "a.txt",
            "a/empty",
            "a/z.bin",
            "b.txt",
            "c/d/e.dat"
        ]
    );
    let content: Vec<u8> = paths
        .iter()
        .flat_map(|p| std::fs::read(src.join(p)).unwrap())
        .collect();
    assert_eq!(
        *last.lock().unwrap(),
        (content.len() as u64, content.len() as u64)
    );
    assert_eq!(m.info.pieces, hashes(&content, PL));

    // Storage over the source folder finds every piece.
    let s = Storage::open(dir.path(), &m.info).unwrap();
    let want: Vec<PathBuf> = paths.iter().map(|p| src.join(p)).collect();
    assert_eq!(s.file_paths(), want);
    assert!(s.recheck(&|_| {}).unwrap().is_full());

    // The automatic piece length is a power of two of at least 16 KiB.
    let auto = create_torrent(&src, &CreateOptions::default(), &|_, _| {}).unwrap();
    let auto = Metainfo::from_bytes(&auto).unwrap();
    assert_eq!(auto.info.piece_length, 16384);
    assert_ne!(auto.info_hash, m.info_hash);
    assert!(auto.trackers.is_empty());
}

#[test]
fn create_hashes_across_threads_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many");
    std::fs::create_dir(&src).unwrap();
    // About 10 MB in 30 files: several batches of 16 KiB pieces.
    let mut content = Vec::new();
    for i in 0..30u64 {
        let d = data(((i * 7919 * 41) % 700_000) as usize, 100 + i);
        std::fs::write(src.join(format!("f{i:02}")), &d).unwrap();
        content.extend_from_slice(&d);
    }
    let opts = CreateOptions {
        piece_length: Some(PL),
        ..CreateOptions::default()
    };
    let calls = AtomicU32::new(0);
    let bytes = create_torrent(&src, &opts, &|_, _| {
        calls.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.files.len(), 30);
    assert_eq!(m.info.total_length(), content.len() as u64);
    assert_eq!(m.info.pieces, hashes(&content, PL));
    assert!(calls.into_inner() >= 3);

    // Pieces larger than a read chunk.
    let big = dir.path().join("big.iso");
    let content = data(9 << 20, 200);
    std::fs::write(&big, &content).unwrap();
    let opts = CreateOptions {
        piece_length: Some(8 << 20),
        ..CreateOptions::default()
    };
    let m = Metainfo::from_bytes(&create_torrent(&big, &opts, &|_, _| {}).unwrap()).unwrap();
    assert_eq!(m.info.pieces, hashes(&content, 8 << 20));
}

#[test]
fn create_single_file_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(5 * 32768 + 77, 20);
    let file = dir.path().join("movie.mkv");
    std::fs::write(&file, &content).unwrap();
    let opts = CreateOptions {
        piece_length: Some(32768),
        ..CreateOptions::default()
    };
    let m = Metainfo::from_bytes(&create_torrent(&file, &opts, &|_, _| {}).unwrap()).unwrap();
    assert!(!m.info.multi_file);
    assert_eq!(m.info.name, "movie.mkv");
    assert_eq!(m.info.total_length(), content.len() as u64);
    assert_eq!(m.info.pieces, hashes(&content, 32768));
    let s = Storage::open(dir.path(), &m.info).unwrap();
    assert_eq!(s.file_paths(), vec![file.clone()]);
    assert!(s.recheck(&|_| {}).unwrap().is_full());

    for bad in [0, 1000, 16383, 49152, 128 << 20] {
        let opts = CreateOptions {
            piece_length: Some(bad),
            ..CreateOptions::default()
        };
        assert!(matches!(
            create_torrent(&file, &opts, &|_, _| {}),
            Err(CreateError::PieceLength(p)) if p == bad
        ));
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_op = &|_: u64, _: u64| {};
    assert!(matches!(
        create_torrent(&empty, &CreateOptions::default(), no_op),
        Err(CreateError::EmptyFolder(_))
    ));
    std::fs::create_dir(empty.join("sub")).unwrap();
    assert!(matches!(
        create_torrent(&empty, &CreateOptions::default(), no_op),
        Err(CreateError::EmptyFolder(_))
    ));
    std::fs::write(empty.join("sub/zero"), b"").unwrap();
    assert!(matches!(
        create_torrent(&empty, &CreateOptions::default(), no_op),
        Err(CreateError::NoData(_))
    ));
    assert!(matches!(
        create_torrent(&dir.path().join("nope"), &CreateOptions::default(), no_op),
        Err(CreateError::Io { .. })
    ));
    // A name our parser would refuse is refused up front, naming the file.
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("c:x"), b"data").unwrap();
    let err = create_torrent(&odd, &CreateOptions::default(), no_op).unwrap_err();
    assert!(matches!(err, CreateError::BadName { .. }), "{err}");
    assert!(err.to_string().contains("c:x"), "{err}");
}
