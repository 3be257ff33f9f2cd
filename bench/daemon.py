#!/usr/bin/python3
"""The daemons of bench/daemon.sh, driven through their own HTTP APIs
(standard library only).

    daemon.py make N DATA_DIR TORRENT_DIR ANNOUNCE_URL [--size BYTES]
        N files of random bytes in DATA_DIR and a single-file torrent of
        each in TORRENT_DIR (one piece each unless --size is larger).
    daemon.py add CLIENT URL TORRENT_DIR DATA_DIR
        Adds every torrent to the client (its data in DATA_DIR).
    daemon.py wait CLIENT URL N TIMEOUT
        Waits until N torrents seed; prints the seconds it took.
    daemon.py list CLIENT URL RUNS
        Times RUNS lists of every torrent with the fields a UI shows;
        prints each time in seconds.
    daemon.py prefs CLIENT URL DATA_DIR PEER_PORT
        qBittorrent only: its preferences for the bench.

CLIENT is essaim, transmission or qbittorrent; URL its API root
(http://127.0.0.1:PORT).
"""

import base64
import hashlib
import http.client
import json
import os
import random
import sys
import time
import urllib.parse
import uuid


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        out = b"d"
        for k in sorted(v, key=lambda k: k.encode() if isinstance(k, str) else k):
            out += bencode(k) + bencode(v[k])
        return out + b"e"
    raise TypeError(type(v))


def cmd_make(n, data, out, announce, size):
    os.makedirs(data, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(12345)
    piece = 16384
    for i in range(n):
        name = f"f{i:06d}.bin"
        body = rnd.randbytes(size)
        with open(os.path.join(data, name), "wb") as f:
            f.write(body)
        pieces = b"".join(
            hashlib.sha1(body[o : o + piece]).digest() for o in range(0, len(body), piece)
        )
        info = {"name": name, "length": size, "piece length": piece, "pieces": pieces}
        meta = {"announce": announce, "info": info}
        with open(os.path.join(out, name + ".torrent"), "wb") as f:
            f.write(bencode(meta))


class Api:
    def __init__(self, client, url):
        self.client = client
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.conn = None
        self.tr_session = ""

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
            if self.client == "transmission":
                headers["X-Transmission-Session-Id"] = self.tr_session
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if r.status == 409 and self.client == "transmission":
                self.tr_session = r.getheader("X-Transmission-Session-Id", "")
                continue
            return r.status, data
        raise RuntimeError("no answer")

    def rpc(self, method, arguments):
        body = json.dumps({"method": method, "arguments": arguments})
        status, data = self.request(
            "POST", "/transmission/rpc", body, {"Content-Type": "application/json"}
        )
        if status != 200:
            raise RuntimeError(f"transmission {method}: HTTP {status} {data[:200]!r}")
        reply = json.loads(data)
        if reply.get("result") != "success":
            raise RuntimeError(f"transmission {method}: {reply.get('result')}")
        return reply["arguments"]


def multipart(parts):
    """parts: (name, filename or None, bytes)."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, value in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = f'form-data; name="{name}"'
        if filename:
            disp += f'; filename="{filename}"'
        out += f"Content-Disposition: {disp}\r\n".encode()
        if filename:
            out += b"Content-Type: application/x-bittorrent\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, f"multipart/form-data; boundary={boundary}"


def cmd_add(api, tdir, data):
    files = sorted(f for f in os.listdir(tdir) if f.endswith(".torrent"))
    if api.client == "qbittorrent":
        for i in range(0, len(files), 200):
            # Skip qBittorrent's first check: it checks about one torrent a
            # second here (the data is known good; the load phase is not
            # compared, and restarts use resume data either way).
            parts = [("savepath", None, data.encode()), ("skip_checking", None, b"true")]
            for f in files[i : i + 200]:
                with open(os.path.join(tdir, f), "rb") as fh:
                    parts.append(("torrents", f, fh.read()))
            body, ctype = multipart(parts)
            status, reply = api.request(
                "POST", "/api/v2/torrents/add", body, {"Content-Type": ctype}
            )
            if status != 200:
                raise RuntimeError(f"qbittorrent add: HTTP {status} {reply[:200]!r}")
        return
    for f in files:
        with open(os.path.join(tdir, f), "rb") as fh:
            raw = fh.read()
        if api.client == "transmission":
            api.rpc(
                "torrent-add",
                {"metainfo": base64.b64encode(raw).decode(), "download-dir": data},
            )
        else:
            body, ctype = multipart([("torrent", f, raw), ("save_path", None, data.encode())])
            status, reply = api.request(
                "POST", "/api/v1/torrents", body, {"Content-Type": ctype}
            )
            if status not in (200, 201):
                raise RuntimeError(f"essaim add: HTTP {status} {reply[:200]!r}")


def seeding(api):
    if api.client == "essaim":
        status, data = api.request("GET", "/api/v1/session")
        return json.loads(data)["seeding"] if status == 200 else 0
    if api.client == "transmission":
        ts = api.rpc("torrent-get", {"fields": ["status"]})["torrents"]
        return sum(1 for t in ts if t["status"] == 6)
    status, data = api.request("GET", "/api/v2/torrents/info")
    if status != 200:
        return 0
    seed_states = {"uploading", "stalledUP", "forcedUP", "queuedUP"}
    return sum(1 for t in json.loads(data) if t.get("state") in seed_states)


def cmd_wait(api, n, timeout):
    start = time.monotonic()
    while True:
        try:
            k = seeding(api)
        except (OSError, http.client.HTTPException, ValueError, RuntimeError):
            k = -1
        if k >= n:
            print(f"{time.monotonic() - start:.2f}")
            return
        if time.monotonic() - start > timeout:
            sys.exit(f"daemon.py: {api.client}: {k}/{n} seeding after {timeout} s")
        time.sleep(0.2)


# The fields a list view shows, asked of each client.
TR_FIELDS = [
    "id", "name", "status", "percentDone", "totalSize", "rateDownload", "rateUpload",
    "uploadRatio", "eta", "peersConnected", "error", "errorString", "addedDate",
    "queuePosition", "hashString", "downloadDir", "uploadedEver", "downloadedEver",
]


def list_all(api):
    if api.client == "essaim":
        status, data = api.request("GET", "/api/v1/torrents")
        n = len(json.loads(data))
    elif api.client == "transmission":
        n = len(api.rpc("torrent-get", {"fields": TR_FIELDS})["torrents"])
    else:
        status, data = api.request("GET", "/api/v2/torrents/info")
        n = len(json.loads(data))
    return n


def cmd_list(api, runs):
    for _ in range(runs):
        start = time.monotonic()
        n = list_all(api)
        print(f"{time.monotonic() - start:.3f} {n}")


def cmd_prefs(api, data, peer_port):
    prefs = {
        "dht": False, "pex": False, "lsd": False, "upnp": False,
        "queueing_enabled": False, "max_ratio_enabled": False,
        "max_seeding_time_enabled": False, "listen_port": int(peer_port),
        "save_path": data, "bittorrent_protocol": 1, "random_port": False,
        "announce_to_all_trackers": False, "anonymous_mode": False,
        "max_connec": 500, "max_connec_per_torrent": 50,
        "max_active_downloads": -1, "max_active_uploads": -1, "max_active_torrents": -1,
    }
    body = urllib.parse.urlencode({"json": json.dumps(prefs)})
    status, reply = api.request(
        "POST", "/api/v2/app/setPreferences", body,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise RuntimeError(f"qbittorrent prefs: HTTP {status} {reply[:200]!r}")


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd = a[0]
    if cmd == "make":
        size = 16384
        if "--size" in a:
            size = int(a[a.index("--size") + 1])
        cmd_make(int(a[1]), a[2], a[3], a[4], size)
        return
    api = Api(a[1], a[2])
    if cmd == "add":
        cmd_add(api, a[3], a[4])
    elif cmd == "wait":
        cmd_wait(api, int(a[3]), float(a[4]))
    elif cmd == "list":
        cmd_list(api, int(a[3]))
    elif cmd == "prefs":
        cmd_prefs(api, a[3], a[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
