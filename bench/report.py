#!/usr/bin/python3
"""Tables of the bench scripts, from the raw results they write.

    report.py transfer RESULTS.tsv SIZE_BYTES RUNS
    report.py create RESULTS.tsv SIZE_BYTES RUNS

RESULTS.tsv is tab-separated with a header line; see transfer.sh and
create.sh for the columns. Lines `skip<TAB>CLIENT<TAB>REASON` and
`ceiling<TAB>KEY<TAB>VALUE` may be mixed in. Medians are over the
successful runs only; the `ok` column says how many runs succeeded.
"""

import statistics
import sys

GIB = 1 << 30
NOTES = []


def human(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def load(path):
    rows, skips, ceilings = [], [], {}
    global NOTES
    NOTES = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "skip":
                skips.append((parts[1], parts[2]))
            elif parts[0] == "note":
                NOTES.append(parts[1])
            elif parts[0] == "ceiling":
                ceilings[parts[1]] = parts[2]
            elif parts[0]:
                rows.append(dict(zip(header, parts)))
    return rows, skips, ceilings


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(headers, lines, align):
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(headers)]
    def row(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()
    out = [row(headers), row(["-" * w for w in widths])]
    out += [row(l) for l in lines]
    return "\n".join(out)


def med(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) not in (None, "", "-")]
    return statistics.median(vals) if vals else None


def transfer(path, size, runs):
    rows, skips, ceilings = load(path)
    gib = size / GIB
    pieces = []
    for r in rows:
        if r["piece"] not in pieces:
            pieces.append(r["piece"])
    clients = []
    for r in rows:
        if r["client"] not in clients:
            clients.append(r["client"])
    print(f"transfer of {human(size)} on 127.0.0.1, one seeder and one leecher, "
          f"medians of the successful runs out of {runs} (interleaved)")
    headers = ["piece", "client", "ok", "wall s", "MB/s", "leech CPU s", "s/GiB",
               "seed CPU s", "s/GiB", "leech RSS MiB"]
    lines = []
    stats = {}
    for p in pieces:
        for c in clients:
            rs = [r for r in rows if r["piece"] == p and r["client"] == c]
            if not rs:
                continue
            good = [r for r in rs if r["status"] == "ok"]
            wall = med(good, "wall")
            lcpu = med(good, "lcpu")
            scpu = med(good, "scpu")
            rss = med(good, "rss_kib")
            rate = size / wall / 1e6 if wall else None
            stats[(p, c)] = dict(rate=rate, lcpu=lcpu / gib if lcpu is not None else None, rss=rss)
            lines.append([
                human(int(p)), c, f"{len(good)}/{len(rs)}", fmt(wall, ".2f"), fmt(rate, ".0f"),
                fmt(lcpu, ".2f"), fmt(lcpu / gib if lcpu is not None else None, ".2f"),
                fmt(scpu, ".2f"), fmt(scpu / gib if scpu is not None else None, ".2f"),
                fmt(rss / 1024 if rss is not None else None, ".1f"),
            ])
    print(table(headers, lines, "llrrrrrrrr"))
    for c, why in skips:
        print(f"skipped: {c}: {why}")
    for n in NOTES:
        print(f"note: {n}")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        print(f"failed: {r['client']}, {human(int(r['piece']))} pieces, run {r['run']}: {r['status']}")
    for p in pieces:
        e = stats.get((p, "essaim"))
        others = {c: s for (pp, c), s in stats.items() if pp == p and c != "essaim"}
        if not e:
            continue
        parts = []
        rated = {c: s["rate"] for c, s in others.items() if s["rate"]}
        if e["rate"] and rated:
            best = max(rated, key=rated.get)
            parts.append(f"rate {e['rate'] / rated[best]:.2f}x the best other ({best}, {rated[best]:.0f} MB/s)")
        frugal = {c: s["lcpu"] for c, s in others.items() if s["lcpu"]}
        if e["lcpu"] and frugal:
            best = min(frugal, key=frugal.get)
            parts.append(f"leecher CPU/GiB {e['lcpu'] / frugal[best]:.2f}x the most frugal other "
                         f"({best}, {frugal[best]:.2f} s/GiB)")
        if e["rss"]:
            parts.append(f"essaim peak RSS {e['rss'] / 1024:.1f} MiB")
        if parts:
            print(f"essaim, {human(int(p))} pieces: " + "; ".join(parts))
    if ceilings:
        print("ceilings of this machine:")
        for key, label in (
            ("tcp", "one TCP stream on 127.0.0.1 (ceilings.py, 1 MiB writes/reads)"),
            ("sha1", "SHA-1, one core (openssl speed -evp sha1 -bytes 1048576)"),
            ("create", "essaim create on the data in page cache, all cores"),
            ("write", "sequential write (dd bs=1M conv=fdatasync)"),
        ):
            if key in ceilings:
                print(f"  {label:<66} {ceilings[key]:>6} MB/s")
    return 1 if failed else 0


def create(path, size, runs):
    rows, skips, ceilings = load(path)
    tools = []
    for r in rows:
        if r["tool"] not in tools:
            tools.append(r["tool"])
    sha1 = float(ceilings["sha1"]) if "sha1" in ceilings else None
    cores = int(ceilings.get("cores", "1"))
    bound = sha1 * cores / 1000 if sha1 else None  # GB/s
    print(f"hashing {human(size)} already in page cache, medians of the successful runs "
          f"out of {runs} (interleaved)")
    headers = ["what", "tool", "threads", "ok", "wall s", "GB/s", "of bound", "CPU s", "peak RSS MiB"]
    lines = []
    for t in tools:
        rs = [r for r in rows if r["tool"] == t]
        good = [r for r in rs if r["status"] == "ok"]
        wall = med(good, "wall")
        cpu = med(good, "cpu")
        rss = med(good, "rss_kib")
        gbps = size / wall / 1e9 if wall else None
        lines.append([
            rs[0]["what"], t, rs[0]["threads"], f"{len(good)}/{len(rs)}", fmt(wall, ".2f"),
            fmt(gbps, ".2f"), fmt(gbps / bound * 100 if gbps and bound else None, ".0f") + ("%" if gbps and bound else ""),
            fmt(cpu, ".2f"), fmt(rss / 1024 if rss is not None else None, ".1f"),
        ])
    print(table(headers, lines, "lllrrrrrr"))
    for c, why in skips:
        print(f"skipped: {c}: {why}")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        print(f"failed: {r['tool']} run {r['run']}: {r['status']}")
    if bound:
        print(f"bound: {cores} cores x {sha1 / 1000:.2f} GB/s (SHA-1 on one core: openssl speed -evp sha1 "
              f"-bytes 1048576 -seconds 3, one thread) = {bound:.2f} GB/s")
    return 1 if failed else 0


def main():
    mode, path, size, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.exit({"transfer": transfer, "create": create}[mode](path, size, runs))


if __name__ == "__main__":
    main()
