//! .torrent parsing: `Metainfo::from_bytes` on arbitrary bytes. A torrent
//! that parses must be consistent (piece count, safe paths, total size) and
//! survive `to_torrent_bytes` and `from_info_bytes` with the same infohash.
#![no_main]

use essaim_core::metainfo::check_component;
use essaim_core::{InfoHash, Magnet, Metainfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let info = &m.info;
    assert_eq!(info.pieces.len(), info.layout.num_pieces() as usize);
    assert_eq!(info.piece_length, info.layout.piece_length());
    assert!(info.total_length() > 0);
    check_component(&info.name, &info.name).expect("name is safe");
    assert!(!info.files.is_empty());
    let mut sum: u64 = 0;
    for f in &info.files {
        assert!(!f.path.is_empty());
        for c in &f.path {
            check_component(c, c).expect("path component is safe");
        }
        sum = sum.checked_add(f.length).expect("total overflows");
    }
    assert_eq!(sum, info.total_length());
    assert_eq!(info.layout.files().len(), info.files.len());
    assert_eq!(m.info_hash, InfoHash::of_info(&m.info_bytes));

    let again = Metainfo::from_bytes(&m.to_torrent_bytes()).expect("re-encoded torrent parses");
    assert_eq!(again.info_hash, m.info_hash);
    assert_eq!(again.info, m.info);
    assert_eq!(again.trackers, m.trackers);
    assert_eq!(again.comment, m.comment);
    assert_eq!(again.created_by, m.created_by);
    assert_eq!(again.creation_date, m.creation_date);

    let from_info = Metainfo::from_info_bytes(&m.info_bytes, m.trackers.clone())
        .expect("info bytes parse alone");
    assert_eq!(from_info.info_hash, m.info_hash);
    assert_eq!(from_info.info, m.info);

    let magnet = Magnet::parse(&m.magnet()).expect("our magnet link parses");
    assert_eq!(magnet.info_hash, m.info_hash);
    assert_eq!(magnet.display_name.as_deref(), Some(m.info.name.as_str()));
});
