#!/usr/bin/python3
"""Time a command until it prints a line, then stop it.

    until_line.py SECS REGEX LOGPREFIX CMD...

Starts CMD in its own session (stdout to LOGPREFIX.out, stderr to
LOGPREFIX.err), waits until a line of its stdout matches REGEX, then reads
the process's CPU time (utime + stime from /proc) and peak RSS (VmHWM), stops
its process group (SIGTERM, SIGKILL after 5 s) and prints
`WALL_S CPU_S PEAK_RSS_KIB`, the wall time counted from just before the
start. Exit status: 0 on a match, 1 if CMD exited first, 124 after SECS.
Used to time a data check (`essaim seed` until `seeding`, `lt.py seed` until
`ready`, aria2 until it listens).
"""

import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1])
    return cpu, rss


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    secs, regex, prefix, cmd = float(sys.argv[1]), re.compile(sys.argv[2]), sys.argv[3], sys.argv[4:]
    libc = ctypes.CDLL(None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = open(prefix + ".out", "wb")
    err = open(prefix + ".err", "wb")
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=lambda: libc.prctl(1, signal.SIGTERM, 0, 0, 0))
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while True:
            left = start + secs - time.perf_counter()
            if left <= 0:
                print(f"until_line.py: no line matching {regex.pattern!r} after {secs:.0f} s", file=sys.stderr)
                sys.exit(124)
            if not sel.select(timeout=left):
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                print(f"until_line.py: {cmd[0]} exited with status {p.wait()} before a line "
                      f"matching {regex.pattern!r}", file=sys.stderr)
                sys.exit(1)
            out.write(chunk)
            out.flush()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if any(regex.search(l.decode(errors="replace")) for l in lines):
                wall = time.perf_counter() - start
                cpu, rss = stats(p.pid)
                print(f"{wall:.3f} {cpu:.2f} {rss}")
                return
    finally:
        stop(p)


if __name__ == "__main__":
    main()
