#!/usr/bin/env python3
"""A tiny HTTP BitTorrent tracker for checking the interop harness by hand.

    tracker.py --listen 127.0.0.1:PORT

Announce URL: http://127.0.0.1:PORT/announce. Keeps peers in memory, answers
compact (BEP 23) or dictionary peer lists, interval 5 s. The peer's IP is the
connection's source address (or the `ip` parameter when given). The automated
tests use `essaim tracker` instead; this one exists so the client-to-client
transfers can be run before essaim works (see validate.sh). Prints
`listening on HOST:PORT` once bound (port 0 picks a free one).
"""

import argparse
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


SWARMS = {}  # info_hash -> {peer_id: (ip, port, left, last_seen)}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        print("tracker:", fmt % args, file=sys.stderr, flush=True)

    def reply(self, body, code=200):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (e.g. its `stopped` announce at exit)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/announce":
            return self.reply(b"not found", 404)
        q = urllib.parse.parse_qs(url.query, encoding="latin-1", keep_blank_values=True)
        one = lambda k, d=None: q.get(k, [d])[0]
        try:
            info_hash = one("info_hash").encode("latin-1")
            peer_id = one("peer_id").encode("latin-1")
            port = int(one("port"))
            left = int(one("left", "0"))
        except (AttributeError, TypeError, ValueError):
            return self.reply(bencode({"failure reason": "bad announce"}))
        if len(info_hash) != 20:
            return self.reply(bencode({"failure reason": "bad info_hash"}))
        ip = one("ip") or self.client_address[0]
        event = one("event", "")
        now = time.monotonic()
        with LOCK:
            swarm = SWARMS.setdefault(info_hash, {})
            for pid in [p for p, v in swarm.items() if now - v[3] > 120]:
                del swarm[pid]
            if event == "stopped":
                swarm.pop(peer_id, None)
            else:
                swarm[peer_id] = (ip, port, left, now)
            others = [(pid, v) for pid, v in swarm.items() if pid != peer_id]
            complete = sum(1 for v in swarm.values() if v[2] == 0)
        self.log_message("announce %s %s:%d left=%d event=%s -> %d peers",
                         info_hash.hex()[:8], ip, port, left, event or "-", len(others))
        resp = {"interval": 5, "min interval": 1, "complete": complete,
                "incomplete": len(swarm) - complete}
        if one("compact", "1") == "1":
            packed = b""
            for _, (pip, pport, _, _) in others:
                try:
                    packed += socket.inet_aton(pip) + struct.pack(">H", pport)
                except OSError:
                    pass
            resp["peers"] = packed
        else:
            resp["peers"] = [{"peer id": pid, "ip": pip, "port": pport}
                             for pid, (pip, pport, _, _) in others]
        self.reply(bencode(resp))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    print("listening on %s:%d" % srv.server_address[:2], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
