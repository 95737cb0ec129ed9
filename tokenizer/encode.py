"""Batch encoding of Arrow text with a trained `tokenizer.json` into flat numpy token arrays.

`Encoder.encode(texts)` returns (values, offsets): the token ids of every document laid end to end and
where each document starts, the shape of an Arrow list column, so packing never touches a Python list
per document.

Document text never becomes a control id: a document that contains the text `<|sep|>` (or any other
special token's text) is encoded as that text, byte by byte, never as the separator's id, so a
document cannot forge a document boundary in packed shards. Both backends split special tokens this
way (HF `tokenizers`' `encode_special_tokens`, fastokens' `split_special_tokens`, as transformers'
`split_special_tokens=True`), and every encoded batch is checked for control ids anyway.

Two backends give the same ids. fastokens (`encode_batch_flat`: flat uint32 ids, no Python object per
document or token) is used when it loads the file and gives exactly HF `tokenizers`' ids on the
built-in parity sample (tokenizer/parity_sample.py: every script, digits, white space, control
characters, a code point sweep, code, the special tokens' text), checked when the Encoder is built;
otherwise HF `tokenizers` is used and `fallback_reason` says why (it is logged too). `backend` names
the one in use. On one thread, with a 65,536-id tokenizer on the shared text, Encoder encodes 17.6x as
many characters per CPU-second as `tokenizers`' encode_batch, 0.94x raw `encode_batch_flat`; building
an Encoder costs about 1.6 CPU-seconds (loading both tokenizers, 1.4 s, and the parity check)
(bench/bench_tokenizer.py `encode`, bench/results/tokenizer_encode.json).

Memory: with fastokens, the HF tokenizer is freed after the parity check (`tokenizer` loads it again
for `decode`), the pages freed by parsing the file are given back (`curation.memory.trim_heap`), and the
fastokens tokenizer is built again every FAST_RENEW_CHARS characters, as its word cache has no bound.
Building an Encoder of a 65,536-id file adds 78 MB of private memory to a process (124 MB when both
tokenizers were held; 63 MB for HF tokenizers alone); encoding then adds fastokens' cache, about 3.3
bytes a character of new text up to the renewal (bench/README.md, the Ray run's memory).

Threads: `tokenizers` and fastokens' batch parallelism follow RAYON_NUM_THREADS (the Ray executor gives
each stage actor one thread); fastokens' pool for the pieces of one long text reads its own
FASTOKENS_BPE_THREADS, which is set to RAYON_NUM_THREADS where that is set and it is not.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from curation import storage
from curation.errors import CurationError
from curation.memory import trim_heap
from curation.tokenizer import parity_sample

log = logging.getLogger(__name__)

SEP_TOKEN, PAD_TOKEN = "<|sep|>", "<|pad|>"
DTYPE_CHOICES = ("uint16", "uint32", "auto")
BACKEND_CHOICES = ("auto", "tokenizers")  # auto: fastokens where it passes the parity check
UINT16_LIMIT = 1 << 16
# Texts are encoded in pieces of about this many characters. tokenizers keeps an Encoding per document
# (token strings, offsets, masks: about 100 bytes a token), so a 4 MiB batch at once peaked at +110 MB;
# in 64K-character pieces +13 MB, and no slower on one thread (measured on the shared text). fastokens
# returns 4 bytes a token and no objects; on one thread its 1 MiB pieces took 15-20% less CPU than 64K
# ones with an 8,000-id tokenizer (6 interleaved rounds on 2.8 M characters of the shared text; 4 MiB:
# no better), and the same within the noise with 65,536 ids (bench/results/tokenizer_encode.json).
ENCODE_CHUNK_CHARS = 64_000
FAST_CHUNK_CHARS = 1 << 20
# fastokens (0.3.5) caches the ids of every distinct pre-token it has encoded, without bound (HF
# tokenizers keeps 10,000 words): 113 MB after the 34.5 M characters of the shared text, 3.3 bytes a
# character of new text, and on a corpus it grows until the worker is killed. The tokenizer is built
# again after this many characters (0.8 CPU-seconds), which bounds the cache near 0.2 GB on text like
# the shared data.
FAST_RENEW_CHARS = 1 << 26


class EncodeError(CurationError, ValueError):
    """The tokenizer cannot be used as asked; the message says why and what to do."""


class Encoder:
    def __init__(self, path: str | Path, dtype: str = "uint16", separator: str = SEP_TOKEN, pad: str = PAD_TOKEN,
                 *, backend: str = "auto") -> None:
        path = path if storage.is_uri(path) else Path(path)  # a URI: read through curation.storage
        if dtype not in DTYPE_CHOICES:
            raise EncodeError(f"dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
        if backend not in BACKEND_CHOICES:
            raise EncodeError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
        if not storage.is_file(path):
            raise EncodeError(f"tokenizer file {path} does not exist: train one with `curation train-tokenizer`")
        # one read: the hash, tokenizers and fastokens all see the same bytes
        raw = storage.read_bytes(path)
        try:
            self._json = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodeError(f"{path} is not a tokenizer.json that HF tokenizers can load: {exc}") from None
        self.path = path
        self._hf: Tokenizer | None = self._load_hf()
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        fits = self.vocab_size <= UINT16_LIMIT
        if dtype == "uint16" and not fits:
            raise EncodeError(f"{path}: vocabulary of {self.vocab_size:,} ids does not fit uint16 (at most 65,536): "
                              "train a smaller vocabulary, or pack with dtype uint32 (--dtype uint32)")
        self.dtype = np.dtype(np.uint16 if dtype == "uint16" or (dtype == "auto" and fits) else np.uint32)
        self.sep_id = self._special(separator, "separator")
        self.pad_id = self._special(pad, "padding")
        added = self._hf.get_added_tokens_decoder()
        self.special_tokens = {t.content: int(i) for i, t in added.items() if t.special}
        self.control_ids = np.array(sorted({*self.special_tokens.values(), self.sep_id, self.pad_id}), np.int64)
        largest = max(self._hf.get_vocab(with_added_tokens=True).values(), default=0)
        self._is_control = np.zeros(max(largest, self.vocab_size) + 1, bool)
        self._is_control[self.control_ids] = True
        self._fast = None
        self._fast_chars = 0  # characters the current fastokens tokenizer has encoded (FAST_RENEW_CHARS)
        self.fallback_reason: str | None = None
        if backend == "auto":
            specials = sorted({*(t.content for t in added.values()), separator, pad})
            self._fast, self.fallback_reason = self._load_fastokens(specials)
            if self._fast is None:
                log.warning("%s: encoding with HF tokenizers, not fastokens: %s", path, self.fallback_reason)
        else:
            self.fallback_reason = "HF tokenizers asked for (backend='tokenizers')"
        self.backend = "fastokens" if self._fast is not None else "tokenizers"

    @property
    def tokenizer(self) -> Tokenizer:
        """The file as HF `tokenizers` loads it (special tokens split): the encoder of the `tokenizers`
        backend, and what `decode` uses. With fastokens it is freed once the parity check is done and
        loaded again on first use here: a worker that only encodes holds one tokenizer, not two."""
        if self._hf is None:
            self._hf = self._load_hf()
        return self._hf

    def _load_hf(self) -> Tokenizer:
        try:
            tokenizer = Tokenizer.from_str(self._json)
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise EncodeError(f"{self.path} is not a tokenizer.json that HF tokenizers can load: {exc}") from None
        # split special tokens: their text in a document is text (tokenizers >= 0.15 has the switch)
        tokenizer.encode_special_tokens = True
        return tokenizer

    def _special(self, token: str, role: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise EncodeError(f"{self.path} has no {role} token {token!r}: train it with `curation train-tokenizer` "
                              "(which adds <|bos|> <|eos|> <|pad|> <|sep|>) or name another token")
        return int(token_id)

    # --- the two backends ------------------------------------------------------------------------

    def _load_fastokens(self, specials: list[str]):
        """(fastokens tokenizer, None) when it loads this file and gives tokenizers' ids on the parity
        sample (with the added and special tokens' text), else (None, why not). When fastokens passes,
        the HF tokenizer is freed (`tokenizer` loads it again if asked)."""
        try:
            import fastokens  # a young dependency: a failed import falls back to HF tokenizers
        except ImportError as exc:
            return None, f"fastokens is not installed ({exc})"
        if "RAYON_NUM_THREADS" in os.environ:
            # read once per process, at fastokens' first encode: an actor's one thread holds for it too
            os.environ.setdefault("FASTOKENS_BPE_THREADS", os.environ["RAYON_NUM_THREADS"])
        texts = parity_sample.documents(specials)
        # tokenizers' ids first, then it is freed before fastokens is built: the two are never held
        # together (for a 65,536-id file tokenizers holds about 25 MB, fastokens 50 MB, and each
        # parses the file through about 35 MB more)
        theirs = self._hf_chunk(texts)
        hf, self._hf = self._hf, None
        del hf
        # glibc keeps the pages of the freed parse tree in the process, where numpy's and Arrow's large
        # buffers (their own mappings) never reuse them: every worker held them for its whole life
        trim_heap()
        try:
            # the bytes already read and hashed, as tokenizers got them (not from_file: what it may
            # read beside the file, such as the tokenizer_config.json written for transformers, is
            # fastokens' business and tokenizers never reads it)
            fast = fastokens.Tokenizer.from_json_str(self._json)
        except Exception as exc:  # an unsupported model, normalizer, pre-tokenizer or regex
            return None, f"fastokens cannot load {storage.basename(self.path)}: {type(exc).__name__}: {exc}"
        finally:
            trim_heap()
        try:
            size = fast.vocab_size
            if size != self.vocab_size:
                return None, f"fastokens counts {size} ids in the vocabulary, tokenizers {self.vocab_size}"
            ours = self._fast_chunk(fast, texts)
        except Exception as exc:
            return None, f"fastokens failed on the parity sample: {type(exc).__name__}: {exc}"
        why = first_difference(texts, ours, theirs)
        if why:
            return None, f"fastokens and tokenizers give different ids on the parity sample: {why}"
        return fast, None

    def _renew_fastokens(self) -> None:
        """A fresh fastokens tokenizer from the same bytes, dropping the one whose word cache grew
        (FAST_RENEW_CHARS). Same file, same library: the parity check holds for it."""
        import fastokens  # optional, as in _load_fastokens: only an Encoder that passed the check renews

        self._fast = None
        trim_heap()
        self._fast = fastokens.Tokenizer.from_json_str(self._json)
        self._fast_chars = 0
        trim_heap()

    @staticmethod
    def _fast_chunk(fast, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, offsets = fast.encode_batch_flat(texts, add_special_tokens=False, split_special_tokens=True)
        return np.frombuffer(ids, np.dtype("<u4")), np.frombuffer(offsets, np.dtype("<u8")).astype(np.int64)

    def _hf_chunk(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokenizer = self.tokenizer
        encodings = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.uint32,
                             count=int(offsets[-1]))
        return values, offsets

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, texts: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(values, offsets) of the documents' token ids; no special tokens are added, and special
        tokens' text in a document is encoded as text. Encoded in pieces of about ENCODE_CHUNK_CHARS
        characters (FAST_CHUNK_CHARS with fastokens), to bound memory."""
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):
            texts = texts.to_pylist()
        texts = ["" if t is None else t for t in texts]
        limit = FAST_CHUNK_CHARS if self._fast is not None else ENCODE_CHUNK_CHARS
        lengths_parts, value_parts = [], []
        start = 0
        while start < len(texts):
            stop, chars = start, 0
            while stop < len(texts) and (stop == start or chars + len(texts[stop]) <= limit):
                chars += len(texts[stop])
                stop += 1
            chunk = texts[start:stop]
            if self._fast is not None:
                if self._fast_chars > FAST_RENEW_CHARS:
                    self._renew_fastokens()
                self._fast_chars += chars
                values, offsets = self._fast_chunk(self._fast, chunk)
            else:
                values, offsets = self._hf_chunk(chunk)
            self._check_no_control(values, offsets, start)
            value_parts.append(values.astype(self.dtype))
            lengths_parts.append(np.diff(offsets))
            start = stop
        offsets = np.zeros(len(texts) + 1, np.int64)
        if texts:
            np.cumsum(np.concatenate(lengths_parts), out=offsets[1:])
        values = np.concatenate(value_parts) if value_parts else np.zeros(0, self.dtype)
        return values, offsets

    def _check_no_control(self, values: np.ndarray, offsets: np.ndarray, first: int) -> None:
        """Both backends split special tokens, so this never fires unless a tokenizer's BPE merges can
        spell a special token out of plain text; packed data would then hold forged boundaries."""
        hits = np.flatnonzero(self._is_control[values])
        if len(hits):
            doc = int(np.searchsorted(offsets, hits[0], side="right")) - 1
            raise EncodeError(f"{self.path}: document {first + doc} of the batch encodes to control id "
                              f"{int(values[hits[0]])} ({self.tokenizer.id_to_token(int(values[hits[0]]))!r}) from "
                              "its text: this tokenizer's merges spell a special token; retrain it")

    def decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def first_difference(texts: list[str], ours: tuple[np.ndarray, np.ndarray],
                     theirs: tuple[np.ndarray, np.ndarray]) -> str | None:
    """None when two (values, offsets) encodings of `texts` are equal, else where they first differ."""
    (a, a_off), (b, b_off) = ours, theirs
    if len(a_off) == len(b_off) and np.array_equal(a_off, b_off) and np.array_equal(a, b):
        return None
    for i, text in enumerate(texts):
        x, y = a[a_off[i]:a_off[i + 1]], b[b_off[i]:b_off[i + 1]]
        if not np.array_equal(x, y):
            k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
            return (f"text {i} ({text[:40]!r}{'...' if len(text) > 40 else ''}, {len(text)} characters): "
                    f"from token {k}, {x[k:k + 6].tolist()} against {y[k:k + 6].tolist()} "
                    f"({len(x)} and {len(y)} tokens)")
    return f"the batches differ in length ({len(a)} and {len(b)} tokens)"


def from_list_array(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of an Arrow list column of token ids, offsets starting at 0."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_large_list(array.type):
        array = array.cast(pa.large_list(array.type.value_type))
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]
