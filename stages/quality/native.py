"""The compiled batch scorer (`stages/quality/kenlm_scorer.cc`): KenLM scores of a whole Arrow array of
raw documents in one call, the normalisation of `curation.stages.quality.lm_text` done on the way.

`scripts/build_kenlm.sh` builds it beside `lmplz` (CURATION_KENLM_DIR/lib/libcuration_kenlm.so, by
default under ~/.cache/curation/kenlm). Where it has not been built the `quality` stage scores through
the `kenlm` Python module instead (same numbers, about half the speed: bench/bench_quality.py) and says
so in its stats (`python_scorer`).

The library knows no Unicode: the lower-case mapping and which code points are white space,
punctuation or CJK come from here, computed once per process with the same Arrow functions and
regular expressions that `lm_text.normalise` and `lm_text.lines` use, so both paths give one text.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.code_point_tables import cached
from curation.stages.quality import lm_text

LIBRARY = "libcuration_kenlm.so"
SPACE, PUNCT, CJK = 1, 2, 4
_F64, _I64, _I32, _U8 = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in (np.float64, np.int64, np.int32, np.uint8))


def library_path() -> Path:
    return Path(os.environ.get("CURATION_KENLM_DIR", Path.home() / ".cache" / "curation" / "kenlm")) / "lib" / LIBRARY


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled scorer, or None where the setup has not built it."""
    path = library_path()
    if not path.exists():
        return None
    lib = ctypes.CDLL(str(path))
    lib.ks_load.restype = ctypes.c_void_p
    lib.ks_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int64]
    lib.ks_free.argtypes = [ctypes.c_void_p]
    lib.ks_set_unigrams.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _I64, ctypes.c_int64, _F64, ctypes.c_double, ctypes.c_double]
    lib.ks_score.restype = ctypes.c_int64
    lib.ks_score.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _I64, ctypes.c_int64, _U8, _I32, ctypes.c_int64, ctypes.c_int32,
                             _F64, _F64, _F64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.ks_normalise.restype = ctypes.c_int64
    lib.ks_normalise.argtypes = [ctypes.c_char_p, _I64, ctypes.c_int64, _U8, _I32, ctypes.c_int64, ctypes.c_int32,
                                 ctypes.c_char_p, ctypes.c_int64, _I64]
    return lib


@functools.cache
def unicode_tables() -> tuple[np.ndarray, np.ndarray]:
    """(flags per code point: SPACE | PUNCT | CJK, lower-case code point per code point), from Arrow,
    cached on disk across processes (stages/code_point_tables.py)."""
    depends = (lm_text.UNICODE_PUNCT, lm_text.CJK_CHAR)
    return (cached("kenlm_flags", lambda: _build_unicode_tables()[0], *depends),
            cached("kenlm_lower", lambda: _build_unicode_tables()[1], *depends))


@functools.cache
def _build_unicode_tables() -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)
    # one code point per string, built from the UTF-32 bytes in one go
    chars = pa.array(np.frombuffer(points.astype("<u4").tobytes(), dtype="<U1"), pa.string())
    flags = np.zeros(0x110000, np.uint8)
    flags[points[pc.utf8_is_space(chars).to_numpy(zero_copy_only=False)]] |= SPACE
    flags[points[pc.match_substring_regex(chars, lm_text.UNICODE_PUNCT).to_numpy(zero_copy_only=False)]] |= PUNCT
    flags[points[pc.match_substring_regex(chars, lm_text.CJK_CHAR).to_numpy(zero_copy_only=False)]] |= CJK
    lowered = pc.utf8_lower(chars)
    # (numpy reads code point 0 as an empty string: it is neither space nor letter)
    if not pc.all(pc.equal(pc.utf8_length(lowered.slice(1)), 1)).as_py():
        raise RuntimeError("Arrow's utf8_lower maps a code point to several: the native scorer cannot follow it")
    lower_points = np.frombuffer(lowered.to_numpy(zero_copy_only=False).astype("<U1").tobytes(), dtype="<u4").copy()
    lower_points[0] = 0
    changed = np.flatnonzero(lower_points != points)
    lower = np.arange(int(points[changed].max()) + 1 if len(changed) else 128, dtype=np.int32)
    lower[points[changed]] = lower_points[changed]
    return flags, lower


def _buffers(text: pa.Array) -> tuple[bytes | memoryview, np.ndarray]:
    """(UTF-8 bytes, int64 offsets into them) of a string array, nulls as empty strings."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if text.null_count:
        text = pc.fill_null(text, "")
    if pa.types.is_large_string(text.type):
        offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset:text.offset + len(text) + 1]
    else:
        offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1].astype(np.int64)
    data = text.buffers()[2]
    return (data if data is not None else pa.py_buffer(b"")), np.ascontiguousarray(offsets)


class NativeScorer:
    """One KenLM binary model, scored in batches by the compiled library."""

    def __init__(self, path: Path) -> None:
        lib = library()
        if lib is None:
            raise FileNotFoundError(f"{library_path()} is not built: run scripts/build_kenlm.sh")
        error = ctypes.create_string_buffer(512)
        self._lib = lib
        self._handle = lib.ks_load(str(path).encode(), error, len(error))
        if not self._handle:
            raise ValueError(f"{path}: {error.value.decode(errors='replace')}")
        self._flags, self._lower = unicode_tables()

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.ks_free(self._handle)
            self._handle = None

    def set_unigrams(self, words: pa.Array, log10p: np.ndarray, oov: float, eos: float) -> None:
        data, offsets = _buffers(words)
        self._lib.ks_set_unigrams(self._handle, _address(data), offsets, len(words),
                                  np.ascontiguousarray(log10p, np.float64), oov, eos)

    def score(self, text: pa.Array, cjk: bool, per_line: bool = False):
        """Per document (log10 p, tokens with one </s> per line, unigram log10 p); with `per_line` also
        (log10 p, tokens + 1, document) of every non-blank line."""
        data, offsets = _buffers(text)
        n = len(offsets) - 1
        doc_lp, doc_words, doc_uni = np.zeros(n), np.zeros(n), np.zeros(n)
        if not per_line:
            self._lib.ks_score(self._handle, _address(data), offsets, n, self._flags, self._lower, len(self._lower), int(cjk),
                               doc_lp, doc_words, doc_uni, None, None, None, 0)
            return doc_lp, doc_words, doc_uni, None
        capacity = int(np.count_nonzero(np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] == 10)) + n
        line_lp, line_words, line_doc = np.zeros(capacity), np.zeros(capacity, np.int32), np.zeros(capacity, np.int64)
        lines = self._lib.ks_score(self._handle, _address(data), offsets, n, self._flags, self._lower, len(self._lower),
                                   int(cjk), doc_lp, doc_words, doc_uni, line_lp.ctypes.data, line_words.ctypes.data,
                                   line_doc.ctypes.data, capacity)
        if lines < 0:
            raise RuntimeError("native scorer: line capacity exceeded")
        return doc_lp, doc_words, doc_uni, (line_lp[:lines], line_words[:lines], line_doc[:lines])


def _address(data) -> ctypes.c_char_p:
    """A pointer to an Arrow buffer's bytes for a `char *` argument, without copying."""
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    return ctypes.cast(ctypes.c_void_p(buffer.address), ctypes.c_char_p)


def normalise(text: pa.Array, cjk: bool) -> list[str]:
    """The text the compiled scorer scores: tokens joined by one space, non-blank lines by '\\n'
    (for tests, against `lm_text.normalise` + `lm_text.lines`)."""
    lib = library()
    flags, lower = unicode_tables()
    data, offsets = _buffers(text)
    n = len(offsets) - 1
    capacity = 3 * int(offsets[-1] - offsets[0]) + 16
    out = ctypes.create_string_buffer(capacity)
    out_offsets = np.zeros(n + 1, np.int64)
    written = lib.ks_normalise(_address(data), offsets, n, flags, lower, len(lower), int(cjk), out, capacity, out_offsets)
    if written < 0:
        raise RuntimeError("native normalise: output capacity exceeded")
    raw = out.raw[:written]
    return [raw[out_offsets[i]:out_offsets[i + 1]].decode() for i in range(n)]
