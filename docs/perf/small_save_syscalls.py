"""Where a small save's kernel time goes: the floor's durable protocol done
with raw syscalls, and the same with each of safestash's differences added
one at a time, interleaved, 300 rounds, medians (issue 16, README
Performance section).

    python3 docs/perf/small_save_syscalls.py [DIR]

Variants:
- floor:   O_EXCL temp `.bench.N.tmp`, write 1,032 bytes, fsync, close,
           rename over `bench`, fsync the directory;
- lock:    + the key's lock file: open O_RDWR|O_CREAT, flock, a no-follow
           stat of the stash, close after the directory fsync;
- rand:    temp names like safestash's, `.bench.XXXXXXXX.tmp` (random);
- seqlong: temp names of the same length, sequential (`.bench.%08d.tmp`);
- all:     lock + random names + a 1,289-byte write (the envelope's size).

Caveat (found later, README): Python's own cost per call is in these
ratios. The Rust contender "floor + promises" in benches/common (the same
lock, names and framing) measures 0.96-1.04 x the floor at 1 KiB.
"""
import fcntl
import os
import secrets
import statistics
import sys
import time

BASE = sys.argv[1] if len(sys.argv) > 1 else "target/small-save-syscalls"


def save(d, lock, names, size, i):
    if lock:
        lf = os.open(d + "/.bench.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            os.stat(d + "/bench", follow_symlinks=False)
        except FileNotFoundError:
            pass
    if names == "rand":
        name = d + "/.bench.%s.tmp" % secrets.token_urlsafe(6)
    elif names == "seqlong":
        name = d + "/.bench.%08d.tmp" % i
    else:
        name = d + "/.bench.%d.tmp" % i
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.write(fd, b"y" * size)
    os.fsync(fd)
    os.close(fd)
    os.rename(name, d + "/bench")
    dfd = os.open(d, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    if lock:
        os.close(lf)


VARIANTS = {
    "floor": (False, "seq", 1032),
    "lock": (True, "seq", 1032),
    "rand": (False, "rand", 1032),
    "seqlong": (False, "seqlong", 1032),
    "all": (True, "rand", 1289),
}

times = {k: [] for k in VARIANTS}
for k in VARIANTS:
    os.makedirs(os.path.join(BASE, k), exist_ok=True)
for i in range(300):
    for k, (lock, names, size) in VARIANTS.items():
        t = time.perf_counter()
        save(os.path.join(BASE, k), lock, names, size, i)
        times[k].append(time.perf_counter() - t)
floor = statistics.median(times["floor"])
for k, v in times.items():
    m = statistics.median(v)
    print("%-8s %6.0f us  %.3f x floor" % (k, m * 1e6, m / floor))
