"""The compiled MinHash signature kernel (`stages/minhash_kernels.cc`), loaded with ctypes.

`scripts/build_kenlm.sh` builds it beside the rule kernels (CURATION_KENLM_DIR/lib/libcuration_minhash.so,
by default under ~/.cache/curation/kenlm). Where it is missing, or where CURATION_MINHASH_NATIVE=0,
`curation.stages.minhash_dedup.signatures` computes the same bytes with numpy (tests compare the two).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from curation.stages.text_rules_native import load_library

LIBRARY = "libcuration_minhash.so"
_U32, _I64 = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in (np.uint32, np.int64))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None where the setup has not built it or CURATION_MINHASH_NATIVE=0."""
    lib = load_library(LIBRARY, "CURATION_MINHASH_NATIVE")
    if lib is None:
        return None
    lib.mh_signatures.restype = ctypes.c_int64
    lib.mh_signatures.argtypes = [_U32, _I64, ctypes.c_int64, _U32, _U32, ctypes.c_int64, _U32, ctypes.c_int64]
    return lib


def signatures_into(out: np.ndarray, hashes: np.ndarray, docs: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Fold the shingles (hash, document) into `out` (n_docs x num_perm uint32) in place; False where the
    kernel is not there (the caller takes the numpy path)."""
    lib = library()
    if lib is None:
        return False
    hashes = np.ascontiguousarray(hashes, np.uint32)
    docs = np.ascontiguousarray(docs, np.int64)
    if lib.mh_signatures(hashes, docs, len(hashes), np.ascontiguousarray(a, np.uint32),
                         np.ascontiguousarray(b, np.uint32), out.shape[1], out, out.shape[0]) != 0:
        raise ValueError("a shingle's document index is outside the batch")
    return True
