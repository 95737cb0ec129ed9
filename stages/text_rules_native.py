"""The compiled kernels of the rule stages (`stages/text_rules.cc`), loaded with ctypes.

`scripts/build_kenlm.sh` builds the library beside the KenLM scorer (CURATION_KENLM_DIR/lib/
libcuration_rules.so, by default under ~/.cache/curation/kenlm). Where it is missing, or where
CURATION_RULES_NATIVE=0, `curation.stages.text_rules` computes the same numbers with numpy and Arrow
(tests compare the two on real text).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LIBRARY = "libcuration_rules.so"
_I64, _I32, _U8, _U16 = (np.ctypeslib.ndpointer(t, flags="C_CONTIGUOUS") for t in (np.int64, np.int32, np.uint8, np.uint16))
_STRINGS = [_U8, _I64, ctypes.c_int64]  # a list of strings: concatenated UTF-8, offsets, count


def library_path() -> Path:
    return Path(os.environ.get("CURATION_KENLM_DIR", Path.home() / ".cache" / "curation" / "kenlm")) / "lib" / LIBRARY


def load_library(name: str, switch: str) -> ctypes.CDLL | None:
    """One of the setup's compiled libraries (beside this one, CURATION_KENLM_DIR/lib/NAME), or None where
    the setup has not built it or the environment variable `switch` is 0: the caller's Python path runs."""
    path = library_path().with_name(name)
    if os.environ.get(switch, "1") == "0" or not path.exists():
        return None
    return ctypes.CDLL(str(path))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where the setup has not built them or CURATION_RULES_NATIVE=0."""
    lib = load_library(LIBRARY, "CURATION_RULES_NATIVE")
    if lib is None:
        return None
    lib.tr_repetition.restype = ctypes.c_int64
    lib.tr_repetition.argtypes = [ctypes.c_void_p, _I64, ctypes.c_int64, _U8, _U8, _I32, ctypes.c_int64, ctypes.c_int32,
                                  ctypes.c_int32, _I64, _I64, _I64]
    lib.tr_quality.restype = ctypes.c_int64
    lib.tr_quality.argtypes = [ctypes.c_void_p, _I64, ctypes.c_int64, _U8, _U16] + _STRINGS * 5 + [_I64]
    lib.tr_fineweb.restype = ctypes.c_int64
    lib.tr_fineweb.argtypes = [ctypes.c_void_p, _I64, ctypes.c_int64, _U8, _U16] + _STRINGS + [ctypes.c_int64] * 2 + [_I64]
    lib.tr_c4.restype = ctypes.c_int64
    lib.tr_c4.argtypes = ([ctypes.c_void_p, _I64, ctypes.c_int64, _U8, _U16, _U8] + _STRINGS * 4 + [_U8, _I64]
                          + [ctypes.c_int64] * 10 + [_I64, _I64, ctypes.c_void_p, _I64])
    return lib


def buffers(text: pa.Array) -> tuple[pa.Buffer, np.ndarray]:
    """(UTF-8 bytes, int64 offsets into them) of a string array, nulls as empty strings."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        # Only these have an offsets buffer: a string_view's views read as offsets would send a kernel
        # past its data (the Arrow functions of the Python paths take no other type either).
        raise ValueError(f"the compiled kernels take string or large_string text, not {text.type}")
    if text.null_count:
        text = pc.fill_null(text, "")
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], width)[text.offset:text.offset + len(text) + 1].astype(np.int64)
    data = text.buffers()[2]
    return (data if data is not None else pa.py_buffer(b"\0")), offsets


def repetition(lib: ctypes.CDLL, text: pa.Array, cjk: np.ndarray, flags: np.ndarray, sizes: list[int], cjk_scale: int,
               top_mode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(span counts [docs, 7], top n-gram characters [docs, sizes], duplicate n-gram characters [docs, sizes])."""
    data, offsets = buffers(text)
    n = len(offsets) - 1
    spans = np.zeros((n, 7), np.int64)
    top, dup = np.zeros((n, len(sizes)), np.int64), np.zeros((n, len(sizes)), np.int64)
    lib.tr_repetition(data.address, offsets, n, np.ascontiguousarray(cjk, np.uint8), flags,
                      np.asarray(sizes, np.int32), len(sizes), cjk_scale, top_mode, spans, top, dup)
    return spans, top, dup


def strings(values) -> tuple[np.ndarray, np.ndarray, int]:
    """A list of strings as the kernels take it: (UTF-8 bytes, int64 offsets, count)."""
    encoded = [v.encode() for v in values]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)]).astype(np.int64)
    return np.frombuffer(b"".join(encoded) + b"\0", np.uint8), offsets, len(encoded)


def quality(lib: ctypes.CDLL, text: pa.Array, cjk: np.ndarray, classes: np.ndarray, stop_words, stop_words_cjk,
            bullets, ellipses, symbols) -> np.ndarray:
    """gopher_quality's counts [docs, 8] (see tr_quality in text_rules.cc)."""
    data, offsets = buffers(text)
    n = len(offsets) - 1
    out = np.zeros((n, 8), np.int64)
    lib.tr_quality(data.address, offsets, n, np.ascontiguousarray(cjk, np.uint8), classes, *strings(stop_words),
                   *strings(stop_words_cjk), *strings(bullets), *strings(ellipses), *strings(symbols), out)
    return out


def fineweb(lib: ctypes.CDLL, text: pa.Array, cjk: np.ndarray, classes: np.ndarray, terminal, short_length: int,
            short_length_cjk: int) -> np.ndarray:
    """fineweb's counts [docs, 7] (see tr_fineweb in text_rules.cc)."""
    data, offsets = buffers(text)
    n = len(offsets) - 1
    out = np.zeros((n, 7), np.int64)
    lib.tr_fineweb(data.address, offsets, n, np.ascontiguousarray(cjk, np.uint8), classes, *strings(terminal),
                   short_length, short_length_cjk, out)
    return out


def c4(lib: ctypes.CDLL, text: pa.Array, cjk: np.ndarray, classes: np.ndarray, lower_ascii: np.ndarray, terminal,
       policy, titles, abbreviations, phrases, options: list[int]) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """c4's (removed lines per document and reason [docs, 6], document reason codes, new text) (see tr_c4)."""
    data, offsets = buffers(text)
    n = len(offsets) - 1
    lines, reasons = np.zeros((n, 6), np.int64), np.zeros(n, np.int64)
    size = int(offsets[-1] - offsets[0]) if n else 0
    out = np.empty(size + 1, np.uint8)  # the new text is never longer than the old
    out_offsets = np.zeros(n + 1, np.int64)
    lib.tr_c4(data.address, offsets, n, np.ascontiguousarray(cjk, np.uint8), classes, lower_ascii,
              *strings(terminal), *strings(policy), *strings(titles), *strings(abbreviations), *strings(phrases)[:2],
              *options, lines, reasons, out.ctypes.data, out_offsets)
    new = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(out_offsets), pa.py_buffer(out[:out_offsets[-1]])])
    return lines, reasons, new
