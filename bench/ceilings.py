#!/usr/bin/python3
"""The machine's ceilings for bench/transfer.sh.

    ceilings.py tcp BYTES
        One TCP stream on 127.0.0.1: a sender process writes BYTES from a
        1 MiB buffer (sendall), a receiver process reads them into a 1 MiB
        buffer (recv_into), as a BitTorrent client's peer socket does; no
        disk. Prints `tcp_mbps N`: BYTES / (time from accept to the last
        byte received), in MB/s (10^6 B/s).

The two sides are separate processes, so they can run on two cores.
"""

import os
import socket
import sys
import time

CHUNK = 1 << 20


def tcp(total):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # sender
        try:
            listener.close()
            s = socket.create_connection(("127.0.0.1", port), timeout=600)
            buf = os.urandom(CHUNK)
            left = total
            while left > 0:
                n = min(left, CHUNK)
                s.sendall(buf[:n] if n < CHUNK else buf)
                left -= n
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # wait for the receiver to close
            s.close()
        finally:
            os._exit(0)
    listener.settimeout(30)
    conn, _ = listener.accept()
    conn.settimeout(600)
    start = time.perf_counter()
    buf = bytearray(CHUNK)
    got = 0
    while got < total:
        n = conn.recv_into(buf)
        if n == 0:
            break
        got += n
    elapsed = time.perf_counter() - start
    conn.close()
    os.waitpid(pid, 0)
    if got != total:
        print(f"ceilings.py: received {got} of {total} bytes", file=sys.stderr)
        sys.exit(1)
    print(f"tcp_mbps {total / elapsed / 1e6:.0f}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "tcp":
        tcp(int(sys.argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
