#!/usr/bin/python3
"""libtorrent (Debian's python3-libtorrent 2.0) for bench/swarm.py, with rate
limits that also hold on 127.0.0.1.

    lt_bench.py seed TORRENT DATA_DIR --port P [--upload-limit BYTES_PER_S]
        Check DATA_DIR, print `ready` once seeding, seed until killed (exit 2
        if the data is incomplete).
    lt_bench.py get TORRENT OUT_DIR --port P [--peer IP:PORT]...
                [--upload-limit B] [--download-limit B] [--seed] [--timeout S]
        Download; print `done` when every piece has passed its hash check.
        Without --seed exit 0 then (3 on timeout); with --seed keep seeding
        until killed, like a leecher that stays in the swarm.

Session: TCP only on 127.0.0.1:P; DHT, LSD, UPnP, NAT-PMP, uTP off; several
connections per IP allowed (every peer is on 127.0.0.1). Limits: the session's
`upload_rate_limit` / `download_rate_limit` (0 = none), with
`rate_limit_ip_overhead` off (payload and protocol bytes count, TCP/IP headers
do not). libtorrent puts peers on local networks, 127.0.0.0/8 included, in its
`local` peer class, which no rate limit and no unchoke-slot limit applies to;
the peer class filter here puts every address in the `global` class, so the
limits and the 8 unchoke slots hold on loopback as they would on the
internet. Run with /usr/bin/python3 (Debian's bindings are not on other
interpreters' paths). Markers (`listening on`, `ready`, `done`) go to stdout,
progress to stderr.
"""

import argparse
import signal
import sys
import time

import libtorrent as lt


def log(*args):
    print("lt_bench:", *args, file=sys.stderr, flush=True)


def peer(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want IP:PORT, got {text!r}")
    return (host, int(port))


def session(args):
    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{args.port}",
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": args.upload_limit,
        "download_rate_limit": args.download_limit,
        "rate_limit_ip_overhead": False,
        "in_enc_policy": 1,
        "out_enc_policy": 1,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "user_agent": "lt_bench/" + lt.__version__,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification,
    })
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    everyone.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
    ses.set_peer_class_filter(everyone)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_failed_alert):
                log("listen failed:", a.message())
                sys.exit(4)
            if isinstance(a, lt.listen_succeeded_alert):
                print(f"listening on {a.address}:{a.port}", flush=True)
                return ses
        ses.wait_for_alert(200)
    log("not listening after 10 s")
    sys.exit(4)


def add(ses, args, save_path):
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(args.torrent)
    p.save_path = save_path
    p.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    h = ses.add_torrent(p)
    for a in getattr(args, "peer", []):
        h.connect_peer(a)
    return h, p.ti


def errors(ses):
    for a in ses.pop_alerts():
        if a.category() & lt.alert.category_t.error_notification:
            log(type(a).__name__ + ":", a.message())


def seed_forever(ses, h):
    last = 0.0
    # Started in the background by a script, SIGINT may come ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            errors(ses)
            if time.monotonic() - last > 5:
                s = h.status()
                log(f"seeding: peers={s.num_peers} up={s.upload_payload_rate} B/s total={s.all_time_upload}")
                last = time.monotonic()
            ses.wait_for_alert(1000)
    except KeyboardInterrupt:
        # The same words as `essaim seed` on Ctrl-C (bench/swarm.py reads them).
        log(f"interrupted: uploaded {h.status().total_payload_upload} bytes")
        sys.exit(130)


def cmd_seed(args):
    ses = session(args)
    h, ti = add(ses, args, args.data)
    deadline = time.monotonic() + args.check_timeout
    checked = False
    while not checked:
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
            elif a.category() & lt.alert.category_t.error_notification:
                log(type(a).__name__ + ":", a.message())
        if not checked:
            if time.monotonic() > deadline:
                log("data check not done in time")
                sys.exit(3)
            ses.wait_for_alert(100)
    s = h.status()
    if not s.is_seeding:
        log(f"data incomplete: {s.num_pieces}/{ti.num_pieces()} pieces")
        sys.exit(2)
    print("ready", flush=True)
    seed_forever(ses, h)


def cmd_get(args):
    ses = session(args)
    h, ti = add(ses, args, args.out)
    deadline = time.monotonic() + args.timeout
    last = 0.0
    while True:
        errors(ses)
        s = h.status()
        if s.num_pieces == ti.num_pieces() and s.state in (lt.torrent_status.finished, lt.torrent_status.seeding):
            break
        now = time.monotonic()
        if now > deadline:
            log(f"timeout: {s.num_pieces}/{ti.num_pieces()} pieces, peers={s.num_peers}")
            sys.exit(3)
        if now - last > 5:
            log(f"progress={s.progress:.3f} peers={s.num_peers} down={s.download_payload_rate} B/s")
            last = now
        ses.wait_for_alert(100)
    print("done", flush=True)
    if args.seed:
        seed_forever(ses, h)
    ses.pause()


def main():
    ap = argparse.ArgumentParser(prog="lt_bench.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn in (("seed", cmd_seed), ("get", cmd_get)):
        p = sub.add_parser(name)
        p.add_argument("torrent")
        p.add_argument("data" if name == "seed" else "out")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--upload-limit", type=int, default=0)
        p.add_argument("--download-limit", type=int, default=0)
        p.set_defaults(func=fn)
        if name == "seed":
            p.add_argument("--check-timeout", type=float, default=600)
        else:
            p.add_argument("--peer", type=peer, action="append", default=[])
            p.add_argument("--seed", action="store_true")
            p.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
