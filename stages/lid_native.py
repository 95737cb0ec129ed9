"""The `lid` stage's compiled predict (`stages/lid_kernels.cc` with fastText's own sources), loaded with ctypes.

`scripts/build_kenlm.sh` builds it beside the rule kernels (CURATION_KENLM_DIR/lib/libcuration_lid.so, by
default under ~/.cache/curation/kenlm), compiling fastText's C++ from the PyPI sdist of the version the
`lid` extra pins. It takes the Arrow string buffers as they are and gives, per document, what pybind's
`multilinePredict` gives for the one-line prefix `curation.stages.lid` builds: the same labels and the
same float32 probabilities (tests/test_lid_native.py compares the two on all of ../shared/data). Where the
library is missing, or where CURATION_LID_NATIVE=0, the stage takes the pybind path.
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np
import pyarrow as pa

from curation.stages.text_rules_native import buffers, load_library

LIBRARY = "libcuration_lid.so"
_I64, _I32, _F32 = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in (np.int64, np.int32, np.float32))
_ERROR_CAPACITY = 512


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled predict, or None where the setup has not built it or CURATION_LID_NATIVE=0."""
    lib = load_library(LIBRARY, "CURATION_LID_NATIVE")
    if lib is None:
        return None
    lib.lid_load.restype = ctypes.c_void_p
    lib.lid_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int64]
    lib.lid_free.restype = None
    lib.lid_free.argtypes = [ctypes.c_void_p]
    lib.lid_labels.restype = ctypes.c_int64
    lib.lid_labels.argtypes = [ctypes.c_void_p]
    lib.lid_label.restype = ctypes.c_int64
    lib.lid_label.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_int64]
    lib.lid_cache_stats.restype = None
    lib.lid_cache_stats.argtypes = [ctypes.c_void_p, _I64]
    lib.lid_predict.restype = ctypes.c_int64
    lib.lid_predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p, _I64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32,
                                _I32, _F32, ctypes.c_char_p, ctypes.c_int64]
    return lib


class NativeModel:
    """A fastText model loaded by the compiled library, with its own bounded word cache."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        error = ctypes.create_string_buffer(_ERROR_CAPACITY)
        handle = lib.lid_load(str(path).encode(), error, _ERROR_CAPACITY)
        if not handle:
            raise ValueError(f"{path}: the compiled lid predict cannot use this model: {error.value.decode(errors='replace')}")
        self._lib, self._handle = lib, handle
        # ctypes releases the GIL, and a handle has one word cache and one set of scratch vectors: two
        # threads in lid_predict at once corrupt the heap. The pybind path held the GIL, so this costs
        # nothing it had (the executors call a stage from one thread; a caller may use more).
        self._lock = threading.Lock()
        labels = []
        for i in range(lib.lid_labels(handle)):
            size = lib.lid_label(handle, i, None, 0)
            out = ctypes.create_string_buffer(size + 1)
            lib.lid_label(handle, i, out, size + 1)
            labels.append(out.value.decode())
        self.labels = labels  # "__label__en", ... by index

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.lid_free(self._handle)
            self._handle = None

    def predict(self, text: pa.Array, max_chars: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(label indexes int32 [n, k], -1 where fewer; probabilities float32 [n, k], 0 where none) of each
        document's first `max_chars` code points as one line. A null reads as the empty string (no label);
        the pybind path refuses nulls, and the reader never yields them (it fills them with "")."""
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        data, offsets = buffers(text)
        n = len(offsets) - 1
        labels = np.empty((n, k), np.int32)
        probs = np.empty((n, k), np.float32)
        error = ctypes.create_string_buffer(_ERROR_CAPACITY)
        with self._lock:
            status = self._lib.lid_predict(self._handle, data.address, offsets, n, max_chars, k, labels, probs, error,
                                           _ERROR_CAPACITY)
        if status != 0:
            raise RuntimeError(f"lid predict failed: {error.value.decode(errors='replace')}")
        return labels, probs

    def cache_stats(self) -> dict[str, int]:
        out = np.zeros(5, np.int64)
        with self._lock:
            self._lib.lid_cache_stats(self._handle, out)
        return dict(zip(("entries", "clears", "hits", "misses", "long_words"), out.tolist()))
