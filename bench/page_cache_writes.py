#!/usr/bin/env python3
"""Buffered writes the way Weir's flusher makes them, with and without letting the page cache go.

Writes GIB gibibytes to PATH in 256 KiB pwrites, fdatasyncs every 500 ms, and prints MB/s and
the system CPU seconds it took. Modes:

  plain      the kernel keeps every written page (reclaims when memory runs short)
  fadvise    after each sync, POSIX_FADV_DONTNEED on what lies more than 256 MiB behind
  dontcache  every pwrite with RWF_DONTCACHE (Linux 6.14+; EOPNOTSUPP elsewhere)

  sync; echo 3 > /proc/sys/vm/drop_caches; bench/page_cache_writes.py plain 16 /work/ddtest
"""

import os
import sys
import time

RWF_DONTCACHE = 0x80
CHUNK = 256 << 10
WINDOW = 256 << 20


def main():
    mode, gib, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    total = gib << 30
    flags = RWF_DONTCACHE if mode == "dontcache" else 0
    chunk = bytearray(CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        began = last_sync = time.time()
        written = dropped = 0
        while written < total:
            written += os.pwritev(fd, [chunk], written, flags)
            if time.time() - last_sync >= 0.5:
                os.fdatasync(fd)
                last_sync = time.time()
                if mode == "fadvise" and written - WINDOW > dropped:
                    os.posix_fadvise(fd, dropped, written - WINDOW - dropped, os.POSIX_FADV_DONTNEED)
                    dropped = written - WINDOW
        os.fdatasync(fd)
        took = time.time() - began
        print(f"{mode}: {total / took / 1e6:.0f} MB/s in {took:.1f} s; {os.times().system:.1f} s system CPU")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
