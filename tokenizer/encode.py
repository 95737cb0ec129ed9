"""Batch encoding of Arrow text with a trained `tokenizer.json` into flat numpy token arrays.

`Encoder.encode(texts)` returns (values, offsets): the token ids of every document laid end to end and
where each document starts, the shape of an Arrow list column, so packing never touches a Python list
per document. It uses `Tokenizer.encode_batch_fast` (no character offsets computed) where the installed
`tokenizers` has it, `encode_batch` otherwise; the thread count is `tokenizers`' own (RAYON_NUM_THREADS;
the Ray executor gives each stage actor one thread per CPU it holds).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.tokenizer.shards import sha256_file

SEP_TOKEN, PAD_TOKEN = "<|sep|>", "<|pad|>"
DTYPE_CHOICES = ("uint16", "uint32", "auto")
UINT16_LIMIT = 1 << 16


class EncodeError(ValueError):
    """The tokenizer cannot be used as asked; the message says why and what to do."""


ENCODE_CHUNK_CHARS = 64_000


class Encoder:
    def __init__(self, path: str | Path, dtype: str = "uint16", separator: str = SEP_TOKEN, pad: str = PAD_TOKEN) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        if dtype not in DTYPE_CHOICES:
            raise EncodeError(f"dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
        if not path.is_file():
            raise EncodeError(f"tokenizer file {path} does not exist: train one with `curation train-tokenizer`")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise EncodeError(f"{path} is not a tokenizer.json that HF tokenizers can load: {exc}") from None
        self.path = path
        self.sha256 = sha256_file(path)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        fits = self.vocab_size <= UINT16_LIMIT
        if dtype == "uint16" and not fits:
            raise EncodeError(f"{path}: vocabulary of {self.vocab_size:,} ids does not fit uint16 (at most 65,536): "
                              "train a smaller vocabulary, or pack with dtype uint32 (--dtype uint32)")
        self.dtype = np.dtype(np.uint16 if dtype == "uint16" or (dtype == "auto" and fits) else np.uint32)
        self.sep_id = self._special(separator, "separator")
        self.pad_id = self._special(pad, "padding")
        self._encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def _special(self, token: str, role: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise EncodeError(f"{self.path} has no {role} token {token!r}: train it with `curation train-tokenizer` "
                              "(which adds <|bos|> <|eos|> <|pad|> <|sep|>) or name another token")
        return int(token_id)

    def encode(self, texts: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(values, offsets) of the documents' token ids; no special tokens are added. Encoded in pieces
        of about ENCODE_CHUNK_CHARS characters: tokenizers keeps an Encoding per document (token
        strings, offsets, masks: about 100 bytes a token), so a 4 MiB batch at once peaked at +110 MB;
        in pieces +13 MB, and no slower on one thread (measured on the shared text)."""
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):
            texts = texts.to_pylist()
        lengths_parts, value_parts = [], []
        start = 0
        while start < len(texts):
            stop, chars = start, 0
            while stop < len(texts) and (stop == start or chars + len(texts[stop] or "") <= ENCODE_CHUNK_CHARS):
                chars += len(texts[stop] or "")
                stop += 1
            encodings = self._encode(texts[start:stop], add_special_tokens=False)
            lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
            value_parts.append(np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=self.dtype,
                                           count=int(lengths.sum())))
            lengths_parts.append(lengths)
            del encodings
            start = stop
        offsets = np.zeros(len(texts) + 1, np.int64)
        if texts:
            np.cumsum(np.concatenate(lengths_parts), out=offsets[1:])
        values = np.concatenate(value_parts) if value_parts else np.zeros(0, self.dtype)
        return values, offsets

    def decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def list_array(values: np.ndarray, offsets: np.ndarray) -> pa.LargeListArray:
    """The (values, offsets) pair as an Arrow list column (zero-copy)."""
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values))


def from_list_array(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of an Arrow list column of token ids, offsets starting at 0."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_large_list(array.type):
        array = array.cast(pa.large_list(array.type.value_type))
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]
