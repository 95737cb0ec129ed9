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

Files are published whole through `curation.storage` (a temporary name then a rename on disk; a
spool file uploaded to the final key on an object store), the JSON last; a shard without its JSON is
not a shard. A folder may be a URI (`s3://bucket/packed/web`): a shard's tokens are then not
memory-mapped but read on demand (`RangedTokens`), each read a ranged GET of the rows it asks for, so a
loader fetches the sequences it serves and never the whole .bin.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.tokenizer.packing import Packed

FORMAT = "curation-packed"
VERSION = 1
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


class ShardError(ValueError):
    """A packed shard is missing, incomplete or not what its metadata says."""


def sha256_file(path: str | Path, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    for chunk in storage.iter_bytes(path, block):
        digest.update(chunk)
    return digest.hexdigest()


def shard_paths(folder: str | Path, name: str) -> tuple[Path | str, Path | str, Path | str]:
    if storage.is_uri(folder):
        return (storage.join(folder, f"{name}.bin"), storage.join(folder, f"{name}.index.parquet"),
                storage.join(folder, f"{name}.json"))
    folder = Path(folder)
    return folder / f"{name}.bin", folder / f"{name}.index.parquet", folder / f"{name}.json"


class ShardWriter:
    """Writes one packed shard as packed sequences arrive (`add`), then its index and metadata (`close`).
    Tokens go to a temporary file and are hashed on the way; nothing is under its final name before
    `close`, and the metadata is renamed into place last."""

    def __init__(self, folder: str | Path, name: str, *, source: str, seq_len: int, strategy: str, sep_id: int,
                 pad_id: int, tokenizer_sha256: str) -> None:
        self.folder = folder if storage.is_uri(folder) else Path(folder)
        self.name = name
        self.bin_path, self.index_path, self.meta_path = shard_paths(self.folder, name)
        self._pending_bin = storage.Pending(self.bin_path, deferrable=True)  # the .json written last vouches for both
        self.tmp_bin = self._pending_bin.local_path
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
        pending_index = storage.Pending(self.index_path, deferrable=True)
        tmp_index = pending_index.local_path
        try:
            columns = [np.concatenate(c) if c else np.zeros(0, np.int64) for c in zip(*self._index)] or \
                [np.zeros(0, np.int64)] * 5
            ids = pa.concat_arrays(self._ids) if self._ids else pa.array([], pa.string())
            index = pa.table({"seq": columns[0].astype(np.int64), "pos": columns[1].astype(np.int32),
                              "length": columns[2].astype(np.int32), "doc": columns[3].astype(np.int64),
                              "doc_id": ids.cast(pa.string()).dictionary_encode(), "doc_offset": columns[4].astype(np.int64)})
            pq.write_table(index, tmp_index, compression="zstd", write_page_checksum=True)
            index_sha256 = sha256_file(tmp_index)
            self._pending_bin.commit()
            pending_index.commit()
        except BaseException:
            self.abort()
            pending_index.abort()
            raise
        stored = self.sequences * self.info["seq_len"]
        meta = {"format": FORMAT, "version": VERSION, "name": self.name, **self.info,
                "dtype": np.dtype(self.dtype or np.uint16).name, "sequences": self.sequences, "tokens": stored,
                "document_tokens": stored - self.padding, "padding_tokens": self.padding,
                "documents": int(len(np.unique(columns[3]))), "segments": int(len(columns[3])),
                "split_documents": self.split_docs, "bin_sha256": self._digest.hexdigest(),
                "index_sha256": index_sha256, **(extra or {})}
        storage.write_bytes(self.meta_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        return meta

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self._pending_bin.abort()


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
        meta = storage.read_json(meta_path)
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


class RangedTokens:
    """The (sequences, seq_len) tokens of a shard in object storage, read on demand: `tokens[row]` and
    `tokens[start:stop]` are one ranged read each of just those rows' bytes (a memory map's row access,
    over HTTP). The file is opened in the process that reads (a forked DataLoader worker opens its own)."""

    def __init__(self, location: str, dtype: np.dtype, sequences: int, seq_len: int) -> None:
        self.location, self.dtype = location, dtype
        self.shape = (sequences, seq_len)
        self._row_bytes = seq_len * dtype.itemsize
        self._handle = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self):
        if self._pid != os.getpid():
            self._handle, self._pid = storage.open_input(self.location), os.getpid()
        return self._handle

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop (one ranged read)."""
        size = (stop - start) * self._row_bytes
        data = self._file().read_at(size, start * self._row_bytes) if size else b""
        if len(data) != size:
            raise ShardError(f"{self.location}: {len(data)} bytes at row {start}, expected {size}: the file is shorter than its metadata says")
        return np.frombuffer(data, dtype=self.dtype).reshape(-1, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            row = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= row < self.shape[0]:
                raise IndexError(f"row {key} of {self.shape[0]}")
            return self.rows(row, row + 1)[0]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self.rows(start, max(start, stop))
        raise TypeError("a remote shard's tokens are read by row or by a slice of rows")


@dataclass
class PackedShard:
    """A packed shard opened for reading: tokens memory-mapped (read on demand from object storage),
    segments as numpy arrays."""

    meta: dict
    tokens: np.ndarray | RangedTokens  # (sequences, seq_len)
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
    sizes = {}
    for path in (bin_path, index_path):
        found = storage.info(path)
        if found.type != storage.pafs.FileType.File:
            raise ShardError(f"{path} is missing (its metadata {name}.json exists): the shard folder is damaged")
        sizes[path] = found.size
    expected_size = meta["sequences"] * meta["seq_len"] * dtype.itemsize
    if sizes[bin_path] != expected_size:
        raise ShardError(f"{bin_path}: {sizes[bin_path]} bytes, its metadata says {expected_size}")
    if expect_sha256 is not None and expect_sha256 != meta["bin_sha256"]:
        raise ShardError(f"{bin_path}: its metadata checksum differs from the manifest's: the shard was replaced")
    if verify:
        for path, key in ((bin_path, "bin_sha256"), (index_path, "index_sha256")):
            if sha256_file(path) != meta[key]:
                raise ShardError(f"{path}: sha256 does not match {name}.json: the file was changed or damaged")
    if meta["sequences"] and storage.is_uri(bin_path):
        # No memory map over HTTP: rows are fetched as they are asked for (the size was checked above)
        tokens = RangedTokens(bin_path, dtype, meta["sequences"], meta["seq_len"])
    elif meta["sequences"]:
        tokens = np.memmap(bin_path, dtype=dtype, mode="r").reshape(-1, meta["seq_len"])
    else:
        tokens = np.zeros((0, meta["seq_len"]), dtype)
    try:
        index = pq.read_table(storage.parquet_source(index_path)).unify_dictionaries()
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{index_path}: cannot read the index: {exc}") from None
    seq = index.column("seq").to_numpy()
    seg_ptr = np.searchsorted(seq, np.arange(meta["sequences"] + 1)).astype(np.int64)
    return PackedShard(meta, tokens, seg_ptr, index.column("pos").to_numpy(), index.column("length").to_numpy(),
                       index.column("doc_offset").to_numpy(), index.column("doc").to_numpy(),
                       index.column("doc_id").combine_chunks().cast(pa.string()))


def list_shard_names(folder: str | Path) -> list[str]:
    """Complete shards in a folder (those with their JSON), sorted."""
    names = []
    for entry in storage.list_files(folder, recursive=False):  # one listing, on disk or in a bucket
        if entry.relative.startswith(".") or not entry.relative.endswith(".json"):
            continue
        try:
            meta = storage.read_json(entry.location)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            names.append(entry.relative[:-len(".json")])
    return names
