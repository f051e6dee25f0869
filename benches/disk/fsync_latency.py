#!/usr/bin/env python3
"""How long one durable append takes on a disk: the floor under any acknowledgement
that waits for fsync (tierlog's Postgres commit and its file tier's fsync alike).

Appends a 600-byte line and calls fdatasync, one at a time (0.5 ms apart), in each of
two files side by side for SECONDS, and prints the latency percentiles, the stalls
(over 20 and 100 ms), the time each file spent in them, and how many stalls the two files
shared (a stall both files see at once is the device's or the file system's, not a
file's).

    python3 benches/disk/fsync_latency.py [DIRECTORY] [SECONDS]   (default: ., 20)
"""
import os
import sys
import tempfile
import threading
import time


def probe(directory, seconds, out):
    fd, path = tempfile.mkstemp(dir=directory, prefix="fsync-probe-")
    line = b"x" * 599 + b"\n"
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            start = time.monotonic()
            os.write(fd, line)
            os.fdatasync(fd)
            out.append((start, time.monotonic() - start))
            time.sleep(0.0005)
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    runs = [[], []]
    threads = [threading.Thread(target=probe, args=(directory, seconds, r)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = sorted(d for r in runs for _, d in r)
    n = len(samples)
    pct = lambda p: samples[min(n - 1, int(n * p))] * 1e3
    stalls = [[(s, s + d) for s, d in r if d > 0.02] for r in runs]
    shared = sum(1 for a0, a1 in stalls[0] if any(b0 < a1 and a0 < b1 for b0, b1 in stalls[1]))
    over20 = [d for d in samples if d > 0.02]
    print(
        f"fsync_latency dir={directory} seconds={seconds:.0f} appends={n} p50={pct(.5):.2f}ms p99={pct(.99):.2f}ms "
        f"p99.9={pct(.999):.2f}ms max={samples[-1] * 1e3:.1f}ms over_20ms={len(over20)} "
        f"over_100ms={sum(1 for d in samples if d > 0.1)} stalled_ms_per_file={sum(over20) * 1e3 / 2:.0f} "
        f"stalls_shared_by_both_files={shared}/{len(stalls[0])}"
    )


if __name__ == "__main__":
    main()
