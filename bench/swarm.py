#!/usr/bin/python3
"""One seeder and N leechers on 127.0.0.1, every upload capped; run by
bench/swarm.sh (which installs and builds what this needs).

    swarm.py --essaim BIN --work DIR [--leechers N] [--size BYTES]
             [--piece-size BYTES] [--upload-limit BYTES_PER_S]
             [--clients essaim,libtorrent] [--timeout S]

For each client: a fresh `essaim tracker`, a seeder, then N leechers started
together, each its own process with its own port, all with the same upload
cap (the seeder too). A leecher stays in the swarm after it completes (it
keeps uploading, as the bound assumes); its completion time is when it says
so (`seeding` from `essaim get`, `done` from lt_bench.py get), measured from
just before the first leecher was started. Every copy is compared with the
source afterwards. Prints one table on stdout, progress on stderr.

The physical bound (every byte leaves the seeder once, and the swarm's total
upload is shared by N downloads): max(F/u_seed, N*F/(u_seed + N*u_peer)).
"""

import argparse
import ctypes
import filecmp
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print("swarm:", *args, file=sys.stderr, flush=True)


def human(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def die_with_parent():
    # SIGTERM the child if this script dies (even by SIGKILL).
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Proc:
    """A child process whose stdout lines are timestamped by a reader thread."""

    def __init__(self, name, argv, logdir, events):
        self.name = name
        self.err = open(os.path.join(logdir, name + ".err"), "wb")
        self.out_log = open(os.path.join(logdir, name + ".out"), "w")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err,
                                  stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                                  text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events):
        for line in self.p.stdout:
            now = time.monotonic()
            self.out_log.write(line)
            self.out_log.flush()
            events.put((self, line.strip(), now))
        events.put((self, None, time.monotonic()))

    def cpu_s(self):
        try:
            with open(f"/proc/{self.p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def interrupt(self, timeout=10):
        """Ctrl-C, and wait for the exit; returns the bytes it says it
        uploaded (`uploaded N bytes` on stderr), if it says so."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self.err.flush()
        with open(self.err.name, "rb") as f:
            m = re.findall(rb"uploaded (\d+) bytes", f.read())
        return int(m[-1]) if m else None

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def wait_marker(proc, events, marker, timeout):
    """Wait for `marker` on proc's stdout (other procs' events are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{proc.name}: no `{marker}` within {timeout:.0f} s")
        try:
            p, line, _ = events.get(timeout=left)
        except queue.Empty:
            continue
        if p is proc and line is None:
            raise RuntimeError(f"{proc.name} exited with status {proc.p.wait()} before `{marker}`")
        if p is proc and line.startswith(marker):
            return line


def free_port(used):
    import random
    import socket
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(1000):
        port = random.randrange(10000, low - 1)
        if port in used:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        used.add(port)
        return port
    raise RuntimeError("no free port")


def run_swarm(client, a, data_dir, torrent_of, logdir, ports):
    """Returns (completion times in s, or None per leecher; failures; total CPU s;
    bytes the seeder uploaded, if it said)."""
    events = queue.Queue()
    procs = []
    try:
        tport = free_port(ports)
        tracker = Proc(f"{client}-tracker", [a.essaim, "tracker", "--listen", f"127.0.0.1:{tport}"],
                       logdir, events)
        procs.append(tracker)
        wait_marker(tracker, events, "tracker listening", 20)
        torrent = torrent_of(f"http://127.0.0.1:{tport}/announce")
        sport = free_port(ports)
        if client == "essaim":
            seed_argv = [a.essaim, "seed", torrent, "--data", data_dir, "--port", str(sport), "--listen-ip", "127.0.0.1",
                         "--upload-limit", str(a.upload_limit), "-q"]
            seed_marker = "seeding"
        else:
            seed_argv = [PY, os.path.join(HERE, "lt_bench.py"), "seed", torrent, data_dir,
                         "--port", str(sport), "--upload-limit", str(a.upload_limit)]
            seed_marker = "ready"
        seeder = Proc(f"{client}-seed", seed_argv, logdir, events)
        procs.append(seeder)
        wait_marker(seeder, events, seed_marker, 300)
        leechers = []
        t0 = time.monotonic()
        log(f"t0 wall clock {time.time():.3f}")
        for i in range(a.leechers):
            out = os.path.join(a.work, "out", client, str(i))
            os.makedirs(out, exist_ok=True)
            port = free_port(ports)
            if client == "essaim":
                argv = [a.essaim, "get", torrent, "-o", out, "--port", str(port), "--listen-ip", "127.0.0.1",
                        "--upload-limit", str(a.upload_limit), "-q"]
                marker = "seeding"
            else:
                argv = [PY, os.path.join(HERE, "lt_bench.py"), "get", torrent, out, "--port", str(port),
                        "--upload-limit", str(a.upload_limit), "--seed", "--timeout", str(a.timeout)]
                marker = "done"
            p = Proc(f"{client}-leech{i}", argv, logdir, events)
            p.out_dir = out
            procs.append(p)
            leechers.append(p)
        done = {}
        failed = {}
        deadline = t0 + a.timeout
        while len(done) + len(failed) < len(leechers):
            left = deadline - time.monotonic()
            if left <= 0:
                for p in leechers:
                    if p not in done and p not in failed:
                        failed[p] = f"not complete after {a.timeout:.0f} s"
                break
            try:
                p, line, when = events.get(timeout=min(left, 1))
            except queue.Empty:
                continue
            if p not in leechers or p in done or p in failed:
                if p is seeder and line is None:
                    log(f"{client}: the seeder exited with status {seeder.p.wait()}")
                continue
            if line is None:
                failed[p] = f"exited with status {p.p.wait()} before completing"
            elif line.startswith(marker):
                done[p] = when - t0
                log(f"{client}: {p.name} complete at {done[p]:.1f} s ({len(done)}/{len(leechers)})")
        cpu = sum(p.cpu_s() for p in procs if p is not tracker)
        seed_sent = seeder.interrupt()
    finally:
        for p in reversed(procs):
            p.stop()
    src = os.path.join(data_dir, a.name)
    for p in leechers:
        if p in done and not filecmp.cmp(src, os.path.join(p.out_dir, a.name), shallow=False):
            failed[p] = "its copy differs from the source"
            del done[p]
    for p, why in failed.items():
        log(f"{client}: {p.name} failed: {why} (logs: {logdir}/{p.name}.*)")
    return sorted(done.values()), [f"{p.name}: {why}" for p, why in failed.items()], cpu, seed_sent


def main():
    ap = argparse.ArgumentParser(prog="swarm.py")
    ap.add_argument("--essaim", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--leechers", type=int, default=20)
    ap.add_argument("--size", type=int, default=64 << 20)
    ap.add_argument("--piece-size", type=int, default=256 << 10)
    ap.add_argument("--upload-limit", type=int, default=1 << 20)
    ap.add_argument("--clients", default="essaim,libtorrent")
    ap.add_argument("--timeout", type=float, default=0)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))

    n, f, u = a.leechers, a.size, a.upload_limit
    bound = max(f / u, n * f / (u + n * u))
    if not a.timeout:
        a.timeout = 3 * bound + 60
    a.name = "swarm.bin"
    logdir = os.path.join(a.work, "logs")
    os.makedirs(logdir, exist_ok=True)
    data_dir = os.path.join(a.work, "src")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, a.name), "wb") as out:
        left = f
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)

    def torrent_of(url):
        path = os.path.join(a.work, f"swarm-{len(os.listdir(a.work))}.torrent")
        subprocess.run([a.essaim, "create", os.path.join(data_dir, a.name), "--piece-size", str(a.piece_size),
                        "-t", url, "-o", path], check=True, stdout=subprocess.DEVNULL, timeout=120)
        return path

    ports = set()
    results = {}
    for client in a.clients.split(","):
        log(f"{client}: 1 seeder + {n} leechers, {human(f)}, uploads capped at {human(u)}/s")
        try:
            results[client] = run_swarm(client, a, data_dir, torrent_of, logdir, ports)
        except RuntimeError as e:
            log(f"{client}: {e}")
            results[client] = ([], [str(e)], 0.0, None)

    print(f"swarm of 1 seeder + {n} leechers on 127.0.0.1, each its own process: {human(f)} file, "
          f"{human(a.piece_size)} pieces, every upload capped at {human(u)}/s (the seeder's too), "
          f"no download cap, essaim tracker")
    headers = ["client", "complete", "first s", "median s", "last s", "bound s", "last/bound", "seed sent",
               "CPU s (all)"]
    lines = []
    failures = 0
    for client, (times, failed, cpu, seed_sent) in results.items():
        failures += len(failed)
        last = times[-1] if times and not failed else None
        lines.append([
            client, f"{len(times)}/{n}",
            f"{times[0]:.1f}" if times else "-",
            f"{times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2:.1f}" if times else "-",
            f"{last:.1f}" if last is not None else "-",
            f"{bound:.1f}",
            f"{last / bound:.2f}" if last is not None else "-",
            f"{seed_sent / f:.2f} F" if seed_sent is not None else "-",
            f"{cpu:.1f}",
        ])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for l in lines:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(l, widths))))
    print(f"bound = max(F/u_seed, N*F/(u_seed + N*u_peer)) = max({f / u:.1f}, {n * f / (u + n * u):.1f}) = "
          f"{bound:.1f} s with F = {human(f)}, N = {n}, u_seed = u_peer = {human(u)}/s")
    print("times from just before the first leecher was started to each leecher's own "
          "`complete` line; a last/bound below 1 would mean a cap was not enforced; seed sent: the "
          "seeder's payload upload in copies of the file F (each piece once before any twice gives 1.00)")
    for client, (_, failed, _, _) in results.items():
        for why in failed:
            print(f"failed: {client}: {why}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
