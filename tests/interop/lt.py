#!/usr/bin/python3
"""Drive libtorrent (Debian's python3-libtorrent, 2.0.x) for the interop tests.

Run with /usr/bin/python3 (the Debian bindings are not on other interpreters'
paths).

    lt.py seed TORRENT DATA_DIR --port P [--peer IP:PORT]...
        Check DATA_DIR against TORRENT, then seed until killed. Prints `ready`
        once the check is done and the torrent is seeding (exits 2 if the data
        is incomplete after the check).
    lt.py seed-many DATA_DIR TORRENT... --port P
        Seed several torrents from DATA_DIR in one session; `ready` once all
        are checked and seeding (exits 2 if any is incomplete).
    lt.py get TORRENT OUT_DIR --port P [--peer IP:PORT]... [--timeout S]
        Download into OUT_DIR; exit 0 when every piece is verified and written,
        3 on timeout. TORRENT may be a magnet link (metadata from the peers).
    lt.py create PATH OUT.torrent [--tracker URL]... [--piece-size N]
        Make a v1-only torrent of PATH (file or folder).
    lt.py files TORRENT
        Print `SIZE PATH` for each file of TORRENT (pad files left out).

The session listens on 127.0.0.1 only, with DHT, LSD, UPnP, NAT-PMP and uTP
off and several connections per IP allowed, so every peer is a TCP peer on
loopback. Every mode that runs a session prints `listening on 127.0.0.1:PORT`
once bound (--port 0 lets the system choose). Progress lines go to stderr;
the `listening on`, `ready` and `done` markers to stdout.
"""

import argparse
import os
import sys
import time

import libtorrent as lt


def log(*args):
    print("lt.py:", *args, file=sys.stderr, flush=True)


def parse_peer(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"peer must be IP:PORT, got {text!r}")
    return (host.strip("[]"), int(port))


def dht_settings(bootstrap):
    """The DHT on 127.0.0.1, bootstrapped only from `bootstrap` (IP:PORT
    pairs). Every node of a test DHT shares one address, so libtorrent's
    one-node-per-IP rules and per-IP rate limits are lifted."""
    if not bootstrap:
        return {"enable_dht": False}
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": ",".join(f"{h}:{p}" for h, p in bootstrap),
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        "dht_ignore_dark_internet": False,
        "dht_block_ratelimit": 100000,
        "dht_upload_rate_limit": 1 << 20,
        "dht_announce_interval": 10,
    }


def make_session(port, dht_bootstrap=()):
    settings = {
        "listen_interfaces": f"127.0.0.1:{port}",
        "listen_system_port_fallback": False,
        "outgoing_interfaces": "",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": 0,
        "download_rate_limit": 0,
        "ssl_listen": 0,
        # Announce to every tracker we are given, quickly and often.
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        "min_announce_interval": 5,
        # Plain text and encrypted peers are both fine.
        "in_enc_policy": 1,  # enabled
        "out_enc_policy": 1,
        "user_agent": "lt.py/" + lt.__version__,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.dht_notification,
    }
    settings.update(dht_settings(dht_bootstrap))
    ses = lt.session(settings)
    # Fail loudly if we could not bind the port we were told to use.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_failed_alert):
                log("listen failed:", a.message())
                sys.exit(4)
            if isinstance(a, lt.listen_succeeded_alert):
                log(a.message())
                print(f"listening on {a.address}:{a.port}", flush=True)
                return ses
        ses.wait_for_alert(200)
    log("no listen_succeeded_alert within 10 s")
    sys.exit(4)


def add(ses, torrent, save_path, peers):
    if torrent.startswith("magnet:"):
        # Metadata from the peers (BEP 9); torrent_info comes later.
        params = lt.parse_magnet_uri(torrent)
        info = None
    else:
        info = lt.torrent_info(torrent)
        params = lt.add_torrent_params()
        params.ti = info
    params.save_path = save_path
    # Not auto-managed: no queueing, no seed ratio/time limits.
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    h = ses.add_torrent(params)
    for p in peers:
        h.connect_peer(p)
    return h, info


def drain(ses, verbose=True):
    for a in ses.pop_alerts():
        if verbose and (
            a.category() & lt.alert.category_t.error_notification
            or isinstance(a, (lt.tracker_reply_alert, lt.tracker_error_alert,
                              lt.peer_connect_alert, lt.peer_disconnected_alert,
                              lt.torrent_finished_alert, lt.hash_failed_alert))
        ):
            log(type(a).__name__ + ":", a.message())


def cmd_seed(args):
    ses = make_session(args.port, args.dht_bootstrap)
    h, info = add(ses, args.torrent, args.data, args.peer)
    deadline = time.monotonic() + args.check_timeout
    checked = False
    while not checked:
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
            elif a.category() & lt.alert.category_t.error_notification:
                log(type(a).__name__ + ":", a.message())
        if time.monotonic() > deadline:
            log("data check did not finish in time, state", h.status().state)
            sys.exit(3)
        if not checked:
            ses.wait_for_alert(100)
    s = h.status()
    if not s.is_seeding:
        log(f"data incomplete after check: {s.num_pieces}/{info.num_pieces()} pieces, state {s.state}")
        sys.exit(2)
    print("ready", flush=True)
    last = 0.0
    last_dht = 0.0
    while True:
        drain(ses)
        now = time.monotonic()
        s = h.status()
        if now - last > 2:
            log(f"seeding: peers={s.num_peers} uploaded={s.all_time_upload}")
            last = now
        # Peers given on the command line: keep offering ourselves to them.
        if args.peer and s.num_peers == 0:
            for p in args.peer:
                h.connect_peer(p)
        # In a test DHT, announce often: the test waits for nobody.
        if args.dht_bootstrap and now - last_dht > 5:
            h.force_dht_announce()
            last_dht = now
        ses.wait_for_alert(500)


def cmd_seed_many(args):
    ses = make_session(args.port)
    handles = [add(ses, t, args.data, [])[0] for t in args.torrents]
    deadline = time.monotonic() + args.check_timeout
    checked = 0
    while checked < len(handles):
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked += 1
            elif a.category() & lt.alert.category_t.error_notification:
                log(type(a).__name__ + ":", a.message())
        if time.monotonic() > deadline:
            log(f"data checks did not finish in time: {checked}/{len(handles)}")
            sys.exit(3)
        if checked < len(handles):
            ses.wait_for_alert(100)
    for h in handles:
        s = h.status()
        if not s.is_seeding:
            log(f"data incomplete after check: {s.name} {s.num_pieces} pieces, state {s.state}")
            sys.exit(2)
    print("ready", flush=True)
    last = 0.0
    while True:
        drain(ses, verbose=False)
        now = time.monotonic()
        if now - last > 5:
            up = sum(h.status().all_time_upload for h in handles)
            peers = sum(h.status().num_peers for h in handles)
            log(f"seeding {len(handles)}: peers={peers} uploaded={up}")
            last = now
        ses.wait_for_alert(500)


def cmd_get(args):
    ses = make_session(args.port, args.dht_bootstrap)
    start = time.monotonic()
    first_peer = None
    got_metadata = not args.torrent.startswith("magnet:")
    os.makedirs(args.out, exist_ok=True)
    h, info = add(ses, args.torrent, args.out, args.peer)
    pieces = lambda: (info or h.torrent_file()).num_pieces() if (info or h.torrent_file()) else "?"
    deadline = time.monotonic() + args.timeout
    last = 0.0
    last_dht = time.monotonic()
    last_dial = time.monotonic()
    while True:
        drain(ses)
        s = h.status()
        now = time.monotonic()
        if first_peer is None and (s.num_peers > 0 or s.has_metadata and not got_metadata):
            first_peer = now - start
            print(f"first peer after {first_peer:.3f} s", flush=True)
        if not got_metadata and s.has_metadata:
            got_metadata = True
            print(f"metadata after {now - start:.3f} s", flush=True)
        if s.is_seeding or (s.state == lt.torrent_status.finished):
            break
        if now > deadline:
            log(f"timeout after {args.timeout} s: {s.num_pieces}/{pieces()} pieces, peers={s.num_peers}")
            sys.exit(3)
        if now - last > 2:
            log(f"state={s.state} progress={s.progress:.3f} pieces={s.num_pieces}/{pieces()} peers={s.num_peers}")
            last = now
        if args.dht_bootstrap and now - last_dht > 5 and s.num_peers == 0:
            h.force_dht_announce()
            last_dht = now
        if args.peer and s.num_peers == 0 and now - last_dial > 3:
            for p in args.peer:
                h.connect_peer(p)
            last_dial = now
        ses.wait_for_alert(200)
    # Every piece passed its hash check; make sure the bytes are on disk
    # before reporting success: pause, then tear the session down.
    # The finished state can come a moment before the last piece is
    # counted: give the count up to 10 s to catch up.
    settle = time.monotonic() + 10
    s = h.status()
    while s.num_pieces != pieces() and time.monotonic() < settle:
        ses.wait_for_alert(100)
        drain(ses, verbose=False)
        s = h.status()
    if s.num_pieces != pieces():
        log(f"finished with {s.num_pieces}/{pieces()} pieces")
        sys.exit(5)
    ses.pause()
    del h
    del ses
    print("done", flush=True)
    log("complete")


def cmd_create(args):
    fs = lt.file_storage()
    path = os.path.abspath(args.path)
    lt.add_files(fs, path)
    if fs.num_files() == 0:
        log("nothing to add at", path)
        sys.exit(2)
    ct = lt.create_torrent(fs, args.piece_size, flags=lt.create_torrent.v1_only)
    for i, url in enumerate(args.tracker):
        ct.add_tracker(url, i)
    ct.set_creator("lt.py/" + lt.__version__)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def cmd_files(args):
    fs = lt.torrent_info(args.torrent).files()
    for i in range(fs.num_files()):
        if not fs.file_flags(i) & lt.file_storage.flag_pad_file:
            print(f"{fs.file_size(i)} {fs.file_path(i)}")


def main():
    ap = argparse.ArgumentParser(prog="lt.py")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("seed")
    p.add_argument("torrent")
    p.add_argument("data")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--peer", type=parse_peer, action="append", default=[])
    p.add_argument("--check-timeout", type=float, default=120)
    p.add_argument("--dht-bootstrap", type=parse_peer, action="append", default=[])
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("seed-many")
    p.add_argument("data")
    p.add_argument("torrents", nargs="+")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--check-timeout", type=float, default=120)
    p.set_defaults(func=cmd_seed_many)

    p = sub.add_parser("get")
    p.add_argument("torrent")
    p.add_argument("out")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--peer", type=parse_peer, action="append", default=[])
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--dht-bootstrap", type=parse_peer, action="append", default=[])
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("create")
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--tracker", action="append", default=[])
    p.add_argument("--piece-size", type=int, default=0)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("files")
    p.add_argument("torrent")
    p.set_defaults(func=cmd_files)

    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
