"""The trainer's loader: one phase of a manifest as a PyTorch `IterableDataset`, deterministic, split
across data-parallel ranks and DataLoader workers, resumable, elastic.

The phase's *stream* is fixed by the manifest and the phase seed alone: each source's allocated
sequences (in the source's fixed order, see `curation.manifest`) are interleaved by weight with stride
scheduling (source s's k-th sequence sits at (k + u_s) / count_s, u_s from the seed), so every prefix of
the stream holds the sources in their weights' proportions to within one sequence each.

Global position g of the stream goes to rank g % world_size, counted from the resume *cursor*; a rank
cuts its part into batches and DataLoader worker w makes the rank's batches b with b % workers == w.
PyTorch's DataLoader takes batches from its workers in turn, so a rank sees its batches in stream order
whatever the number of workers. The state is one number, the cursor: how many stream positions every
rank together has consumed. Ranks of a data-parallel job step together, so after each rank has taken m
sequences the consumed part is exactly the first cursor + m x world_size positions, and a job resumed
from there with any world size and any number of workers reads the rest exactly once (elastic).

Each batch is a dict of tensors: `input_ids` and `labels` (int64, batch x seq_len; labels are the input
ids with -100 on padding and on the first token of every document segment, the convention of Hugging
Face models, which shift labels themselves, so no token is predicted across a document boundary),
`position_ids` (restarting at 0 at each segment), `cu_seqlens` (int32 boundaries of every segment, and
of the padding, over the flattened batch, for variable-length attention) and `max_seqlen`. With
`pin_memory` (the default when CUDA is there) batches arrive in page-locked memory, ready for
`.to(device, non_blocking=True)`.

Every shard's checksums (.bin and index) are recomputed once per process before it is served, and a
shard that does not match its metadata is refused with a ShardError naming it (`verify=False` skips
this; the cost is next to `_VERIFIED`).

The manifest may be a URI (`s3://bucket/run/manifest.json`): the phase is read straight from object
storage. Each sequence served is one ranged read of its `seq_len` tokens (tokenizer/shards.py
`RangedTokens`), so a rank fetches only the sequences it reads, never whole shards, and nothing lands
on local disk. Verification there streams each shard's .bin once per process through sha256 (8 MiB
ranged reads, nothing kept): a full read of every shard the rank touches, which is what a rank reading
a small part of large shards avoids with `verify=False` (the .bin's size and its metadata's checksum
against the manifest's are still checked on opening).

    loader = PhaseLoader("manifest.json", "phase1", rank=rank, world_size=world, batch_size=8, num_workers=2)
    for batch in loader: ...
    state = loader.state_dict()          # save with the checkpoint
    loader.load_state_dict(state)        # in the resumed job, any world size
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from curation import storage
from curation.manifest import (Manifest, ManifestError, PhaseRecord, load_manifest, resolve_location, sequence_order,
                               source_seed, split_location)
from curation.tokenizer.shards import open_shard

STATE_VERSION = 1
IGNORE_INDEX = -100

# Shards whose .bin and index checksums this process has recomputed: (bin path, sha256, size, mtime),
# so each shard is hashed once per process however many loaders, phases or epochs read it (a file
# changed since is hashed again). The cost (bench_loader.py's synthetic uint16 shards, 102 MB, page
# cache, 2 shared cores under load): sha256 0.38-0.67 GB/s (190-335 M tokens/s) beside the loader's
# 13-15 M tokens/s in process measured alongside, so hashing a shard once costs 4-7% of one pass over
# it. Under less load sha256 ran at 1.07 GB/s; beside the README's 124 M tokens/s in process (measured
# on an idle machine) that is under a quarter of one pass.
_VERIFIED: set[tuple[str, str, int, int]] = set()


def _verified_key(folder: Path | str, name: str, sha256: str) -> tuple[str, str, int, int]:
    if isinstance(folder, str):  # a URI: the object's size and last-modified time from the store
        found = storage.info(storage.join(folder, f"{name}.bin"))
        if found.type != storage.pafs.FileType.File:
            raise FileNotFoundError(f"{folder}/{name}.bin")
        return f"{folder}/{name}", sha256, int(found.size), int(found.mtime_ns or 0)
    stat = (folder / f"{name}.bin").stat()
    return str(folder / name), sha256, stat.st_size, stat.st_mtime_ns


def _unit(seed: int, name: str) -> float:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:7], "little") / float(1 << 56)


class PhasePlan:
    """The phase's stream: for stream position g, the shard (`shard_of[g]`, into `shards`) and the row."""

    def __init__(self, manifest: Manifest, root: Path, phase: PhaseRecord, seed: int | None = None) -> None:
        self.seq_len = manifest.seq_len
        self.seed = phase.seed if seed is None else int(seed)
        self.shards: list[tuple[Path, str, str]] = []  # (folder, name, bin sha256)
        keys, shard_parts, row_parts = [], [], []
        self.source_names = sorted(phase.allocation)
        source_parts = []
        for source_index, source in enumerate(self.source_names):
            entry = manifest.sources[source]
            first_shard = len(self.shards)
            for shard in entry.shards:
                folder, name = split_location(resolve_location(root, shard.path))
                self.shards.append((folder, name, shard.bin_sha256))
            counts = np.array([s.sequences for s in entry.shards], np.int64)
            starts = np.concatenate([[0], np.cumsum(counts)])
            ids = []
            for run in phase.allocation[source]:
                order = sequence_order(entry.sequences, source_seed(manifest.seed, source, run.epoch))
                ids.append(order[run.start:run.start + run.count])
            ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            shard = np.searchsorted(starts, ids, side="right") - 1
            shard_parts.append((shard + first_shard).astype(np.int32))
            row_parts.append(ids - starts[shard])
            count = len(ids)
            keys.append((np.arange(count, dtype=np.float64) + _unit(self.seed, source)) / max(count, 1))
            source_parts.append(np.full(count, source_index, np.int16))
        key = np.concatenate(keys) if keys else np.zeros(0)
        source_of = np.concatenate(source_parts) if source_parts else np.zeros(0, np.int16)
        order = np.lexsort((source_of, key))  # by key, ties by source name: deterministic
        self.shard_of = np.concatenate(shard_parts)[order] if shard_parts else np.zeros(0, np.int32)
        self.row_of = np.concatenate(row_parts)[order] if row_parts else np.zeros(0, np.int64)
        self.source_of = source_of[order]

    def __len__(self) -> int:
        return len(self.shard_of)


class PhaseDataset(IterableDataset):
    """One phase of a manifest for one data-parallel rank; yields whole batches (use `batch_size=None`
    in the DataLoader, or `PhaseLoader`, which does and keeps the resumable state)."""

    def __init__(self, manifest_path: str | Path, phase: str, *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 8, seed: int | None = None, drop_last: bool = False, verify: bool = True) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range for world_size {world_size}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # A path, or a URI: a phase is read straight from object storage (ranged reads, not mapped)
        self.manifest_path = manifest_path if storage.is_uri(manifest_path) else Path(manifest_path)
        self.manifest, self.root = load_manifest(self.manifest_path)
        self.phase = self.manifest.phase(phase)
        self.manifest_sha256 = hashlib.sha256(storage.read_bytes(self.manifest_path)).hexdigest()
        self.plan = PhasePlan(self.manifest, self.root, self.phase, seed)
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.drop_last, self.verify = drop_last, verify
        self.cursor = 0  # stream positions consumed by all ranks together
        self._open: dict[int, Any] = {}

    def _shard(self, index: int):
        shard = self._open.get(index)
        if shard is None:
            folder, name, sha = self.plan.shards[index]
            key = None
            if self.verify:
                try:
                    key = _verified_key(folder, name, sha)
                except OSError:
                    key = None  # open_shard names the missing file
            check = self.verify and (key is None or key not in _VERIFIED)
            shard = open_shard(folder, name, verify=check, expect_sha256=sha)
            if check and key is not None:
                _VERIFIED.add(key)
            if shard.meta["seq_len"] != self.plan.seq_len:
                raise ManifestError(f"{folder}/{name}: seq_len {shard.meta['seq_len']}, the manifest says {self.plan.seq_len}")
            self._open[index] = shard
        return shard

    def verify_shards(self) -> None:
        """Recompute the checksums of the shards this rank reads from the cursor on (those not yet
        verified in this process). PhaseLoader does it before its DataLoader workers start, so a damaged
        shard is refused with its own error, not one wrapped by a worker, and forked workers inherit
        the verified set instead of hashing again."""
        if self.verify:
            for index in np.unique(self.plan.shard_of[self.rank_positions()]).tolist():
                self._shard(int(index))
            self._open.clear()  # memory maps are opened again by each worker

    def rank_positions(self) -> np.ndarray:
        """Stream positions this rank reads from the cursor on."""
        positions = np.arange(self.cursor + self.rank, len(self.plan), self.world_size, dtype=np.int64)
        if self.drop_last:
            # every rank the same number of whole batches
            per_rank = (len(self.plan) - self.cursor) // self.world_size
            positions = positions[:per_rank - per_rank % self.batch_size]
        return positions

    def worker_batches(self, worker: int, workers: int) -> Iterator[np.ndarray]:
        """Stream positions of the batches DataLoader worker `worker` of `workers` makes, in order."""
        positions = self.rank_positions()
        for b in range(worker, -(-len(positions) // self.batch_size), workers):
            yield positions[b * self.batch_size:(b + 1) * self.batch_size]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for positions in self.worker_batches(worker, workers):
            yield self.batch(positions)

    def batch(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        n, length = len(positions), self.plan.seq_len
        # input_ids, labels and position_ids share one buffer: a DataLoader worker hands the batch over
        # as one shared-memory segment instead of three (measured: the hand-over dominates otherwise)
        buffer = torch.empty((3, n, length), dtype=torch.int64)
        planes = buffer.numpy()
        tokens, labels, position_ids = planes[0], planes[1].reshape(-1), planes[2]
        starts = np.zeros(n * length, bool)  # first token of a segment (or of the padding)
        padding = np.zeros(n * length, bool)
        for i, g in enumerate(positions.tolist()):
            shard = self._shard(int(self.plan.shard_of[g]))
            row = int(self.plan.row_of[g])
            tokens[i] = shard.tokens[row]
            lo, hi = shard.seg_ptr[row], shard.seg_ptr[row + 1]
            base = i * length
            starts[base + shard.seg_pos[lo:hi]] = True
            end = int(shard.seg_pos[hi - 1] + shard.seg_len[hi - 1]) if hi > lo else 0
            if end < length:
                starts[base + end] = True
                padding[base + end:base + length] = True
        flat_index = np.arange(n * length, dtype=np.int64)
        segment_start = np.maximum.accumulate(np.where(starts, flat_index, 0))
        np.subtract(flat_index, segment_start, out=position_ids.reshape(-1))
        labels[:] = tokens.reshape(-1)
        labels[starts | padding] = IGNORE_INDEX
        bounds = np.append(np.flatnonzero(starts), n * length).astype(np.int32)
        return {"input_ids": buffer[0], "labels": buffer[1], "position_ids": buffer[2],
                "cu_seqlens": torch.from_numpy(bounds), "max_seqlen": int(np.diff(bounds).max()) if len(bounds) > 1 else 0}


class PhaseLoader:
    """A DataLoader over a `PhaseDataset` that counts what the trainer consumed: `state_dict()` after
    any batch, `load_state_dict()` before iterating, in a job of any world size and worker count."""

    def __init__(self, manifest_path: str | Path, phase: str, *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 8, num_workers: int = 0, pin_memory: bool | None = None, seed: int | None = None,
                 drop_last: bool = False, verify: bool = True, prefetch_factor: int | None = None) -> None:
        self.dataset = PhaseDataset(manifest_path, phase, rank=rank, world_size=world_size, batch_size=batch_size,
                                    seed=seed, drop_last=drop_last, verify=verify)
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.prefetch_factor = prefetch_factor if num_workers else None
        self._start = 0
        self._consumed = 0  # sequences this rank has handed to the trainer since the start cursor

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.dataset.cursor = self._start
        self._consumed = 0
        if self.num_workers:
            self.dataset.verify_shards()
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            prefetch_factor=self.prefetch_factor)
        for batch in loader:
            self._consumed += int(batch["input_ids"].shape[0])
            yield batch
        self._start = self.cursor()  # the phase is done for this rank
        self._consumed = 0

    def cursor(self) -> int:
        total = len(self.dataset.plan)
        mine = len(np.arange(self._start + self.dataset.rank, total, self.dataset.world_size))
        if self._consumed >= mine:
            return total  # this rank has read all of its part
        return min(total, self._start + self._consumed * self.dataset.world_size)

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "manifest_sha256": self.dataset.manifest_sha256,
                "phase": self.dataset.phase.name, "seed": self.dataset.plan.seed, "cursor": self.cursor(),
                "sequences": len(self.dataset.plan)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r}, this curation reads {STATE_VERSION}")
        if state["phase"] != self.dataset.phase.name or state["seed"] != self.dataset.plan.seed:
            raise ValueError(f"the state is for phase {state['phase']!r} seed {state['seed']}, this loader reads phase "
                             f"{self.dataset.phase.name!r} seed {self.dataset.plan.seed}")
        if state["manifest_sha256"] != self.dataset.manifest_sha256:
            raise ValueError("the state was saved with a different manifest.json: resume with the manifest it was saved with")
        if not 0 <= int(state["cursor"]) <= len(self.dataset.plan):
            raise ValueError(f"cursor {state['cursor']} is outside the phase (0..{len(self.dataset.plan)})")
        self._start = int(state["cursor"])
        self._consumed = 0

    def __len__(self) -> int:
        positions = len(np.arange(self._start + self.dataset.rank, len(self.dataset.plan), self.dataset.world_size))
        return -(-positions // self.dataset.batch_size)
