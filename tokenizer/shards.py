"""Packed token shards on disk: what `curation pack` writes and the loader memory-maps.

A shard is three files side by side (datatrove's `.ds`/`.index`/`.metadata` idea, Megatron's
memory-mappable `.bin`):

    NAME.bin            sequences x seq_len token ids, little-endian uint16 (uint32 for a larger
                        vocabulary), no header: np.memmap(path, dtype).reshape(-1, seq_len)
    NAME.index.parquet  one row per segment: seq, pos, length, doc (document number in the shard), doc_id,
                        doc_offset (a document's tokens are its text's tokens then the separator;
                        doc_offset counts in those)
    NAME.json           metadata, written last (its presence means the shard is complete): format and
                        version, source, seq_len, dtype, sequences, tokens, document tokens, padding,
                        documents, split documents, separator and pad ids, the tokenizer's sha256, and
                        the sha256 of the .bin and the index; a `concat` source's `_tail` also lists
                        `continues`: [{doc, shard}], the tail documents that finish the last
                        document of an input shard's packed shard

Files are written under temporary names and renamed; a shard without its JSON is not a shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.tokenizer.packing import Packed

FORMAT = "curation-packed"
VERSION = 1
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


class ShardError(ValueError):
    """A packed shard is missing, incomplete or not what its metadata says."""


def sha256_file(path: str | Path, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def shard_paths(folder: str | Path, name: str) -> tuple[Path, Path, Path]:
    folder = Path(folder)
    return folder / f"{name}.bin", folder / f"{name}.index.parquet", folder / f"{name}.json"


class ShardWriter:
    """Writes one packed shard as packed sequences arrive (`add`), then its index and metadata (`close`).
    Tokens go to a temporary file and are hashed on the way; nothing is under its final name before
    `close`, and the metadata is renamed into place last."""

    def __init__(self, folder: str | Path, name: str, *, source: str, seq_len: int, strategy: str, sep_id: int,
                 pad_id: int, tokenizer_sha256: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.bin_path, self.index_path, self.meta_path = shard_paths(self.folder, name)
        self.tmp_bin = _tmp(self.bin_path)
        self._handle = open(self.tmp_bin, "wb")
        self._digest = hashlib.sha256()
        self.info = {"source": source, "seq_len": seq_len, "strategy": strategy, "sep_id": sep_id, "pad_id": pad_id,
                     "tokenizer_sha256": tokenizer_sha256}
        self.sequences = self.padding = self.split_docs = 0
        self.dtype: np.dtype | None = None
        self._index: list[tuple[np.ndarray, ...]] = []
        self._ids: list[pa.Array] = []

    def add(self, packed: Packed, segment_ids: pa.Array) -> None:
        """Append sequences; `segment_ids` names the document of each of the packed segments."""
        if not packed.sequences:
            return
        self.dtype = packed.tokens.dtype
        raw = np.ascontiguousarray(packed.tokens, dtype=packed.tokens.dtype.newbyteorder("<")).tobytes()
        self._handle.write(raw)
        self._digest.update(raw)
        self._index.append((packed.seg_seq + self.sequences, packed.seg_pos, packed.seg_len, packed.seg_doc,
                            packed.seg_doc_offset))
        self._ids.append(segment_ids)
        self.sequences += packed.sequences
        self.padding += packed.padding
        self.split_docs += packed.split_docs

    def close(self, extra: dict | None = None) -> dict:
        self._handle.close()
        tmp_index = _tmp(self.index_path)
        try:
            columns = [np.concatenate(c) if c else np.zeros(0, np.int64) for c in zip(*self._index)] or \
                [np.zeros(0, np.int64)] * 5
            ids = pa.concat_arrays(self._ids) if self._ids else pa.array([], pa.string())
            index = pa.table({"seq": columns[0].astype(np.int64), "pos": columns[1].astype(np.int32),
                              "length": columns[2].astype(np.int32), "doc": columns[3].astype(np.int64),
                              "doc_id": ids.cast(pa.string()).dictionary_encode(), "doc_offset": columns[4].astype(np.int64)})
            pq.write_table(index, tmp_index, compression="zstd", write_page_checksum=True)
            _fsync_replace(self.tmp_bin, self.bin_path)
            _fsync_replace(tmp_index, self.index_path)
        except BaseException:
            self.abort()
            tmp_index.unlink(missing_ok=True)
            raise
        stored = self.sequences * self.info["seq_len"]
        meta = {"format": FORMAT, "version": VERSION, "name": self.name, **self.info,
                "dtype": np.dtype(self.dtype or np.uint16).name, "sequences": self.sequences, "tokens": stored,
                "document_tokens": stored - self.padding, "padding_tokens": self.padding,
                "documents": int(len(np.unique(columns[3]))), "segments": int(len(columns[3])),
                "split_documents": self.split_docs, "bin_sha256": self._digest.hexdigest(),
                "index_sha256": sha256_file(self.index_path), **(extra or {})}
        tmp_meta = _tmp(self.meta_path)
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _fsync_replace(tmp_meta, self.meta_path)
        return meta

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.tmp_bin.unlink(missing_ok=True)


def write_shard(folder: str | Path, name: str, packed: Packed, doc_ids, *, source: str, seq_len: int, strategy: str,
                sep_id: int, pad_id: int, tokenizer_sha256: str, extra: dict | None = None) -> dict:
    """Write one packed shard atomically; `doc_ids[packed.seg_doc]` names each segment's document."""
    writer = ShardWriter(folder, name, source=source, seq_len=seq_len, strategy=strategy, sep_id=sep_id,
                         pad_id=pad_id, tokenizer_sha256=tokenizer_sha256)
    writer.dtype = packed.tokens.dtype
    ids = np.asarray(doc_ids, dtype=object)
    writer.add(packed, pa.array(ids[packed.seg_doc] if len(packed.seg_doc) else [], pa.string()))
    return writer.close(extra)


def read_meta(folder: str | Path, name: str) -> dict:
    _, _, meta_path = shard_paths(folder, name)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{meta_path} is missing: the shard was not finished (run `curation pack` again)") from None
    except json.JSONDecodeError as exc:
        raise ShardError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ShardError(f"{meta_path} is not a {FORMAT} shard description")
    if meta.get("version", 0) > VERSION:
        raise ShardError(f"{meta_path} has format version {meta['version']}; this curation reads up to {VERSION}: upgrade curation")
    if meta.get("dtype") not in DTYPES:
        raise ShardError(f"{meta_path}: unknown dtype {meta.get('dtype')!r}")
    return meta


@dataclass
class PackedShard:
    """A packed shard opened for reading: tokens memory-mapped, segments as numpy arrays."""

    meta: dict
    tokens: np.ndarray  # (sequences, seq_len) memmap
    seg_ptr: np.ndarray  # int64 (sequences + 1): segments of sequence i are seg_ptr[i]:seg_ptr[i+1]
    seg_pos: np.ndarray
    seg_len: np.ndarray
    seg_doc_offset: np.ndarray
    seg_doc: np.ndarray  # document number (in the shard) of each segment
    doc_ids: pa.Array  # per segment (strings)

    @property
    def sequences(self) -> int:
        return int(self.tokens.shape[0])


def open_shard(folder: str | Path, name: str, verify: bool = False, expect_sha256: str | None = None) -> PackedShard:
    """Open a shard; `verify` recomputes the checksums, `expect_sha256` checks the .bin against a
    manifest's record (a tampered or swapped shard is refused)."""
    meta = read_meta(folder, name)
    bin_path, index_path, _ = shard_paths(folder, name)
    dtype = np.dtype(DTYPES[meta["dtype"]]).newbyteorder("<")
    for path in (bin_path, index_path):
        if not path.exists():
            raise ShardError(f"{path} is missing (its metadata {name}.json exists): the shard folder is damaged")
    expected_size = meta["sequences"] * meta["seq_len"] * dtype.itemsize
    if bin_path.stat().st_size != expected_size:
        raise ShardError(f"{bin_path}: {bin_path.stat().st_size} bytes, its metadata says {expected_size}")
    if expect_sha256 is not None and expect_sha256 != meta["bin_sha256"]:
        raise ShardError(f"{bin_path}: its metadata checksum differs from the manifest's: the shard was replaced")
    if verify:
        for path, key in ((bin_path, "bin_sha256"), (index_path, "index_sha256")):
            if sha256_file(path) != meta[key]:
                raise ShardError(f"{path}: sha256 does not match {name}.json: the file was changed or damaged")
    if meta["sequences"]:
        tokens = np.memmap(bin_path, dtype=dtype, mode="r").reshape(-1, meta["seq_len"])
    else:
        tokens = np.zeros((0, meta["seq_len"]), dtype)
    try:
        index = pq.read_table(index_path).unify_dictionaries()
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{index_path}: cannot read the index: {exc}") from None
    seq = index.column("seq").to_numpy()
    seg_ptr = np.searchsorted(seq, np.arange(meta["sequences"] + 1)).astype(np.int64)
    return PackedShard(meta, tokens, seg_ptr, index.column("pos").to_numpy(), index.column("length").to_numpy(),
                       index.column("doc_offset").to_numpy(), index.column("doc").to_numpy(),
                       index.column("doc_id").combine_chunks().cast(pa.string()))


def list_shard_names(folder: str | Path) -> list[str]:
    """Complete shards in a folder (those with their JSON), sorted."""
    folder = Path(folder)
    names = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            names.append(path.name[:-len(".json")])
    return names
