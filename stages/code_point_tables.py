"""Per-code-point tables (the classes and lower-case maps the compiled kernels read), cached on disk.

A table is computed with the same Arrow functions and expressions the Python path uses, over all 1.1 M
code points: about 2 CPU-seconds, which every stage actor paid at start-up, in every pass (measured:
rule stages' first batch). The result depends only on pyarrow (its Unicode data) and on the code that
builds it, so it is kept in `~/.cache/curation/tables` (`CURATION_CACHE_DIR`) under a key of both, and
written whole or not at all (temporary file, then rename): a process that finds it loads it in
milliseconds. Where the folder cannot be written, the table is simply computed.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa


def cache_dir() -> Path:
    return Path(os.environ.get("CURATION_CACHE_DIR", Path.home() / ".cache" / "curation")) / "tables"


def cached(name: str, build: Callable[[], np.ndarray], *depends: str) -> np.ndarray:
    """`build()`'s array, from the disk cache when the same pyarrow, the same module source of `build`
    and the same `depends` (patterns it reads from elsewhere) made it."""
    source = inspect.getsource(inspect.getmodule(build) or build)
    key = hashlib.sha256("\0".join([pa.__version__, np.__version__, source, *depends]).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    table = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
        with open(tmp, "wb") as handle:
            np.save(handle, table, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: computed each time, as before
    return table
