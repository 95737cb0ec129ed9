"""The memory a process that runs stages keeps: how its allocators are set, and handing freed pages back.

What a run's processes held at their peak was mostly not live data: on the bench corpus (56 MB,
`bench/bench_peer.py`, `executor: local`) memray saw 118-170 MB live at the peak of a process whose
PSS was 480-500 MB; the rest was about 60 MB of libraries, Arrow's mimalloc pool (the pool of its C++
code, which `pa.set_memory_pool` does not reach) and pages glibc had freed but kept. Hence:

- Arrow's C++ pool is the C heap: `curation/__init__.py` sets ARROW_DEFAULT_MEMORY_POOL before pyarrow
  loads, which is the only time Arrow reads it;
- `tune_allocator()` once, where a process starts running stages;
- `trim_heap()` (glibc's `malloc_trim`, 2-4 ms on a stage process) often: after loading a tokenizer,
  every `TRIM_EVERY_BYTES` of a shard's batches and when a shard ends (`curation.pipeline`);
- `release_memory()` (a full garbage collection, Arrow's pool and `malloc_trim`: 40-110 ms) once between
  passes and aggregate steps.

glibc only; elsewhere these calls leave the allocators as they are.
"""

from __future__ import annotations

import ctypes
import gc
import os

import pyarrow as pa

# mallopt's parameters (malloc.h)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
# Allocations of at least this many bytes get a mapping of their own, given back when freed. glibc's
# default starts at 128 KiB and moves up to the largest block freed (up to 32 MiB), after which such
# blocks come from the heap and stay in the process when freed. Measured with Arrow on the C heap and
# the trims below (bench/bench_peer.py's pipeline, 8 shards, 2026-12-01): one process on 200 MB peaked
# at 298 MB of PSS fixed at 4 MiB against 317-325 MB with glibc's default, for 0.3 M more page faults
# and 0.6 s more system time (2% of the run's CPU); the embedded Ray run on 56 MB at 974-977 MB
# against 1,005-1,012 MB. At 1 MiB the MinHash and C4 stages got slower on 500 MB (mapping and zeroing
# pages each time).
MMAP_THRESHOLD_BYTES = 4 << 20
# Text a shard processor reads between two `trim_heap()` calls.
TRIM_EVERY_BYTES = 16 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def tune_allocator() -> None:
    """Less memory kept back by the allocators of a process that runs stages (measured on the bench
    corpus, bench/bench_peer.py; speed the same within this machine's drift there and in
    bench/bench_overhead.py). Each setting is left alone where the user set it in the environment.

    - pyarrow's own buffers from the C heap too (`pa.set_memory_pool`), as its C++ code's are
      (ARROW_DEFAULT_MEMORY_POOL, curation/__init__.py); this one also where pyarrow was loaded before
      curation, too late for the variable: mimalloc keeps what a batch freed in per-thread segments, and
      a rule-filter pass peaked 50 MB higher with it (a noop pass 80 MB).
    - At most two malloc arenas: Arrow's and the tokenizer's threads each got an arena of their own,
      and each arena keeps its freed pages: the packing pass of `executor: local` peaked about 35 MB
      higher. (MALLOC_ARENA_MAX)
    - A fixed mmap threshold, MMAP_THRESHOLD_BYTES. (MALLOC_MMAP_THRESHOLD_)"""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system") == "system":
        pa.set_memory_pool(pa.system_memory_pool())
    if _LIBC is None:
        return
    if not os.environ.get("MALLOC_ARENA_MAX"):
        _LIBC.mallopt(_M_ARENA_MAX, 2)
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (`malloc_trim`): cheap, for use inside a pass."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def release_memory() -> None:
    """Hand freed memory back to the system (Python's garbage, Arrow's pool, the C heap): between passes
    and steps, where a process stays in the pool and would otherwise keep a task's peak while later
    steps need the memory."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    trim_heap()
