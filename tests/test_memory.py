"""The allocator settings of curation.memory, checked in fresh processes (they are process-wide and
read once), and the heap trims the shard processor makes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, read_jsonl, write_parquet
from curation import pipeline
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline


def python(code: str, **env: str) -> str:
    """stdout of `code` in a fresh interpreter, with the test environment minus the allocator variables
    (plus `env`)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                          env={**clean, **env}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_arrow_pool_is_the_c_heap_once_curation_is_imported_first():
    # Arrow reads the variable once, when pyarrow loads: pa.set_memory_pool alone never reached the
    # Parquet reader and writer, whose mimalloc arenas held 46-78 MB per Ray actor
    assert python("import curation, pyarrow as pa; print(pa.default_memory_pool().backend_name)") == "system"
    # control: pyarrow loaded first keeps Arrow's default
    assert python("import pyarrow as pa, curation; print(pa.default_memory_pool().backend_name)") != "system"
    # a pool the user names is kept
    assert python("import curation, pyarrow as pa; print(pa.default_memory_pool().backend_name)",
                  ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tune_allocator_fixes_the_mmap_threshold():
    """A 5 MiB block freed and asked for again: with glibc's moving threshold the second comes from the
    heap (and would stay there when freed); with the threshold fixed at 4 MiB it is a mapping of its
    own, given back on free."""
    code = """
        import ctypes
        from curation import memory
        if "{mode}" == "tuned":
            memory.tune_allocator()
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        first = libc.malloc(5 << 20)
        libc.free(first)
        second = libc.malloc(5 << 20)
        heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
        low, high = (int(x, 16) for x in heap[0].split("-"))
        print("heap" if low <= second < high else "mapped")
        libc.free(second)
    """
    assert python(code.replace("{mode}", "tuned")) == "mapped"
    assert python(code.replace("{mode}", "plain")) == "heap"  # control: glibc's own threshold moved up


def test_shard_processor_trims_the_heap_after_each_shard(tmp_path, monkeypatch):
    rows = read_jsonl("web_commoncrawl_samples.jsonl.gz", 300)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(3):
        write_parquet(inputs / f"part{n}.parquet", [{"id": f"{n}-{i}", "text": r["text"]} for i, r in
                                                   enumerate(rows[n * 100:(n + 1) * 100])])
    calls = []
    monkeypatch.setattr(pipeline, "trim_heap", lambda: calls.append(1))
    config = {"input": {"path": [str(inputs / "*")]}, "output": {"path": str(tmp_path / "out")},
              "executor": {"kind": "local"}, "stages": [{"name": "length_filter", "min_chars": 30}]}
    run_pipeline(pipeline_from_dict(config), RunOptions(progress=False))
    assert len(calls) == 3  # one per shard (each is far under TRIM_EVERY_BYTES)
    calls.clear()
    monkeypatch.setattr(pipeline, "TRIM_EVERY_BYTES", 1)  # and after every batch past the bound
    run_pipeline(pipeline_from_dict({**config, "output": {"path": str(tmp_path / "out2")},
                                     "input": {"path": [str(inputs / "*")], "batch_rows": 25}}), RunOptions(progress=False))
    assert len(calls) == 3 + 3 * 4
