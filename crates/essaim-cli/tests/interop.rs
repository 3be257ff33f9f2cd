//! Interoperability with real BitTorrent clients from Debian's packages:
//! Transmission 3, libtorrent 2.0 (python3-libtorrent) and aria2, in both
//! directions. Each test seeds random multi-file content (odd-sized last
//! piece, 64 KiB pieces) from one side, downloads it with the other over
//! 127.0.0.1, and compares every file byte for byte.
//!
//! A missing client makes the test fail with install instructions; the test
//! command `./test.sh` installs them. How each client is configured for
//! loopback, and why, is in `tests/interop/README.md`.

mod common;

use common::*;

const PIECE_SIZE: u32 = 64 * 1024;

// ---- Transmission 3 -------------------------------------------------------

/// The torrent comes from transmission-create, to check that we read
/// Transmission's torrents (it leaves zero-length files out, so none here).
#[test]
fn transmission_seeds_essaim_downloads() {
    require_transmission();
    let (d, files) = Dirs::new(false);
    transmission_create(&d.content(), None, PIECE_SIZE / 1024, &d.torrent());
    let mut tr = Transmission::start(&d.path("tr-config"), &d.src());
    tr.add(&d.torrent());
    tr.wait_complete("transmission to verify the seed data", DEADLINE);

    essaim_get(&d.torrent(), &d.out(), &[tr.peer_addr()]);
    assert_same_files(&d.src(), &d.out(), &files, false);
}

/// Transmission 3 does not dial loopback peers it hears of from a tracker,
/// so the essaim seeder, which learns of Transmission only from the
/// tracker (no `--peer`), must connect out to it, as seeds normally do.
/// Transmission 3 does not create zero-length files; the torrent has one
/// anyway, to check it copes with our torrent.
#[test]
fn essaim_seeds_transmission_downloads() {
    require_transmission();
    let (d, files) = Dirs::new(true);
    let (_tracker, announce) = essaim_tracker();
    essaim_create(&d.content(), Some(&announce), PIECE_SIZE, &d.torrent());
    let mut tr = Transmission::start(&d.path("tr-config"), &d.out());
    tr.add(&d.torrent());
    tr.wait_running(DEADLINE);

    let (mut seeder, _port) = essaim_seed(&d.torrent(), &d.src(), &[]);
    tr.wait_complete("transmission to download from essaim", DEADLINE);
    seeder.assert_running();
    tr.quit(); // flushes Transmission's cache to disk
    assert_same_files(&d.src(), &d.out(), &files, true);
}

// ---- libtorrent 2.0 -------------------------------------------------------

/// The torrent comes from libtorrent's creator (v1 only, with a zero-length
/// file).
#[test]
fn libtorrent_seeds_essaim_downloads() {
    require_libtorrent();
    let (d, files) = Dirs::new(true);
    lt_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let lt_port = free_port();
    let _seeder = lt_seed(&d.torrent(), &d.src(), lt_port, &[]);

    essaim_get(&d.torrent(), &d.out(), &[local(lt_port)]);
    assert_same_files(&d.src(), &d.out(), &files, false);
}

#[test]
fn essaim_seeds_libtorrent_downloads() {
    require_libtorrent();
    let (d, files) = Dirs::new(true);
    essaim_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let (mut seeder, port) = essaim_seed(&d.torrent(), &d.src(), &[]);

    lt_get(d.torrent(), &d.out(), free_port(), &[local(port)]);
    seeder.assert_running();
    assert_same_files(&d.src(), &d.out(), &files, false);
}

// ---- aria2 ----------------------------------------------------------------
// aria2 learns peers only from trackers, so these two also exercise
// `essaim tracker` and essaim's tracker announces: no --peer is given.

#[test]
fn aria2_seeds_essaim_downloads() {
    require_aria2();
    let (d, files) = Dirs::new(true);
    let (_tracker, announce) = essaim_tracker();
    essaim_create(&d.content(), Some(&announce), PIECE_SIZE, &d.torrent());
    let _seeder = aria2_seed(&d.torrent(), &d.src(), free_port());

    essaim_get(&d.torrent(), &d.out(), &[]);
    assert_same_files(&d.src(), &d.out(), &files, false);
}

#[test]
fn essaim_seeds_aria2_downloads() {
    require_aria2();
    let (d, files) = Dirs::new(true);
    let (_tracker, announce) = essaim_tracker();
    essaim_create(&d.content(), Some(&announce), PIECE_SIZE, &d.torrent());
    let (mut seeder, _port) = essaim_seed(&d.torrent(), &d.src(), &[]);

    aria2_get(&d.torrent(), &d.out(), free_port());
    seeder.assert_running();
    assert_same_files(&d.src(), &d.out(), &files, false);
}

// ---- magnet links: metadata exchange (BEP 9) --------------------------------

/// The magnet link of a .torrent, with a peer to fetch the metadata from.
fn magnet_with_peer(torrent: &std::path::Path, peer: std::net::SocketAddr) -> String {
    let meta = essaim_core::Metainfo::from_bytes(&std::fs::read(torrent).expect("read torrent"))
        .expect("parse torrent");
    format!("{}&x.pe={peer}", meta.magnet())
}

/// `essaim get MAGNET -o OUT` to a successful exit; the metadata is saved
/// as `OUT/NAME.torrent`.
fn essaim_get_magnet(magnet: &str, out: &std::path::Path) {
    let mut cmd = essaim_get_cmd(magnet, out, &[]);
    Proc::spawn("essaim-get-magnet", &mut cmd).expect_success(DEADLINE);
    assert!(out.join("multi.torrent").is_file(), "metadata not saved");
}

#[test]
fn essaim_fetches_metadata_from_libtorrent() {
    require_libtorrent();
    let (d, files) = Dirs::new(true);
    lt_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let lt_port = free_port();
    let _seeder = lt_seed(&d.torrent(), &d.src(), lt_port, &[]);

    essaim_get_magnet(&magnet_with_peer(&d.torrent(), local(lt_port)), &d.out());
    assert_same_files(&d.src(), &d.out(), &files, false);
}

#[test]
fn libtorrent_fetches_metadata_from_essaim() {
    require_libtorrent();
    let (d, files) = Dirs::new(true);
    essaim_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let (mut seeder, port) = essaim_seed(&d.torrent(), &d.src(), &[]);

    let magnet = magnet_with_peer(&d.torrent(), local(port));
    lt_get(&magnet, &d.out(), free_port(), &[local(port)]);
    seeder.assert_running();
    assert_same_files(&d.src(), &d.out(), &files, false);
}

#[test]
fn essaim_fetches_metadata_from_transmission() {
    require_transmission();
    let (d, files) = Dirs::new(false);
    transmission_create(&d.content(), None, PIECE_SIZE / 1024, &d.torrent());
    let mut tr = Transmission::start(&d.path("tr-config"), &d.src());
    tr.add(&d.torrent());
    tr.wait_complete("transmission to verify the seed data", DEADLINE);

    essaim_get_magnet(&magnet_with_peer(&d.torrent(), tr.peer_addr()), &d.out());
    assert_same_files(&d.src(), &d.out(), &files, false);
}

/// Transmission starts from the magnet link alone; the essaim seeder dials
/// it (Transmission does not dial loopback peers) and serves the metadata,
/// then the data.
#[test]
fn transmission_fetches_metadata_from_essaim() {
    require_transmission();
    let (d, files) = Dirs::new(false);
    essaim_create(&d.content(), None, PIECE_SIZE, &d.torrent());
    let mut tr = Transmission::start(&d.path("tr-config"), &d.out());
    let meta = essaim_core::Metainfo::from_bytes(&std::fs::read(d.torrent()).unwrap()).unwrap();
    tr.add_magnet(&meta.magnet());
    tr.wait_running(DEADLINE);

    let (mut seeder, _port) = essaim_seed(&d.torrent(), &d.src(), &[tr.peer_addr()]);
    tr.wait_complete(
        "transmission to fetch metadata and data from essaim",
        DEADLINE,
    );
    seeder.assert_running();
    tr.quit();
    assert_same_files(&d.src(), &d.out(), &files, false);
}
