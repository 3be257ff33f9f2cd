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
use tempfile::TempDir;

const PIECE_SIZE: u32 = 64 * 1024;

/// Fresh folders for one test: `src` holds `multi/...`, `out` receives it.
struct Dirs {
    tmp: TempDir,
}

impl Dirs {
    fn new(with_empty_file: bool) -> (Dirs, Vec<(&'static str, usize)>) {
        let tmp = tempfile::Builder::new()
            .prefix("essaim-interop-")
            .tempdir()
            .expect("tempdir");
        let files = test_files(with_empty_file);
        write_random_files(&tmp.path().join("src"), &files);
        (Dirs { tmp }, files)
    }
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.tmp.path().join(rel)
    }
    fn src(&self) -> std::path::PathBuf {
        self.path("src")
    }
    fn out(&self) -> std::path::PathBuf {
        self.path("out")
    }
    fn content(&self) -> std::path::PathBuf {
        self.path("src/multi")
    }
    fn torrent(&self) -> std::path::PathBuf {
        self.path("multi.torrent")
    }
}

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

    lt_get(&d.torrent(), &d.out(), free_port(), &[local(port)]);
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
