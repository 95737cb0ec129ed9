"""Dedup indexes: what a dedup stage saw in an earlier run, kept so that a later run drops the new
documents that copy it without reading the old corpus again (issue 20 item 2).

A user curates a crawl, then next month adds another. Each dedup stage takes `index_read` (folders
written by earlier runs, oldest first) and `index_write` (a new folder for this run's own entries):

    stages:
      - {name: exact_dedup, index_read: [idx/2024-05-exact], index_write: idx/2024-06-exact}

Indexed documents count as earlier in corpus order than every document of the run (the first listed
index earliest), so the new run keeps exactly what one run over old and new together would keep, and a
rejected copy's `duplicate_of` names the indexed document it copies. What cannot be done without
rewriting the old corpus: an old document that one run over both would now mark as a copy (it joins a
cluster with a new one) keeps its old decision, and a new document that links two old clusters is
marked a copy of the earlier cluster's kept document while the old clusters stay apart.

An index is a folder: Parquet parts (never pickle) and `index.json`, written last, that names the
stage, the format version, the settings the entries depend on (shingle size, permutations, bands...;
a reader with other settings is refused, naming the file), and each part with its row count. A run's
index holds only its own entries (extending = one more folder in the next run's `index_read`).

Publishing: on disk it is written under `PATH.partial` and renamed into place when complete, so a
reader never sees half of one; a killed run rewrites the parts it had not finished and publishes once.
An object store has no rename: the parts go straight to their keys under `PATH` (each whole or absent,
see `curation.storage`) and `index.json`, written last, is what makes the folder an index: a reader
refuses a folder without it, and a resumed run rewrites the parts (the same bytes) and then writes it.
A folder that holds anything but parts and no manifest is never written to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import pyarrow.parquet as pq

from curation import storage
from curation.io import write_json_atomic

FORMAT = "curation-dedup-index"
VERSION = 1
MANIFEST = "index.json"
PART = re.compile(r"^part-[0-9]{5}\.parquet$")


def part_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def staging_dir(path: str) -> str:
    """Where the parts are written: `PATH.partial` on disk (renamed into place when complete); `PATH`
    itself in an object store, which has no rename (see the module docstring)."""
    if storage.is_uri(path):
        return storage.normalise(path)
    return storage.normalise(path).rstrip(os.sep) + ".partial"


def check_options(stage: str, read: tuple[str, ...], write: str | None, settings: dict[str, Any]) -> None:
    """At construction (when the config loads, before any work): every index to read exists and was
    built by this stage with these settings, and the one to write is none of them."""
    for path in read:
        read_manifest(path, stage, settings)
    if write is not None and storage.normalise(write) in {storage.normalise(p) for p in read}:
        raise ValueError(f"stage {stage!r}: index_write {write!r} is also in index_read; "
                         "a run writes its own entries to a new folder (list both in the next run's index_read)")


def read_manifest(path: str, stage: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the index at `path`, refused (ValueError naming the file) when it is missing,
    another stage's, another format version, or built with other settings."""
    manifest_path = storage.join(path, MANIFEST)
    if not storage.is_dir(path):
        raise ValueError(f"stage {stage!r}: index {path!r} does not exist (index_read names folders that an "
                         "earlier run wrote with index_write)")
    names = storage.names_in(path)  # one listing: the manifest and every part
    if MANIFEST not in names:
        partial = ""
        if storage.is_uri(path) and any(PART.match(name) for name in names):
            partial = " (a run writing it did not finish: its parts are there, index.json comes last)"
        elif not storage.is_uri(path) and storage.is_dir(staging_dir(path)):
            partial = f" (a run writing it did not finish: its parts are under {storage.basename(staging_dir(path))})"
        raise ValueError(f"stage {stage!r}: {manifest_path} is missing: {path!r} is not a finished dedup index{partial}")
    try:
        manifest = storage.read_json(manifest_path)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"stage {stage!r}: cannot read {manifest_path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"stage {stage!r}: {manifest_path} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"stage {stage!r}: {manifest_path} has format version {manifest.get('version')}, this "
                         f"version reads {VERSION}; rebuild the index with this version")
    if manifest.get("stage") != stage:
        raise ValueError(f"stage {stage!r}: {manifest_path} is an index of {manifest.get('stage')!r}, not of {stage!r}")
    theirs = manifest.get("settings", {})
    differ = sorted(k for k in set(settings) | set(theirs) if settings.get(k) != theirs.get(k))
    if differ:
        detail = "; ".join(f"{k}: index {theirs.get(k)!r}, this stage {settings.get(k)!r}" for k in differ)
        raise ValueError(f"stage {stage!r}: {manifest_path} was built with other settings ({detail}); its "
                         "entries cannot be compared with this run's: use the same settings or rebuild the index")
    for part in manifest.get("parts", []):
        if part["name"] not in names:
            raise ValueError(f"stage {stage!r}: {manifest_path} lists {part['name']}, which is missing")
    return manifest


def index_parts(paths: tuple[str, ...], stage: str, settings: dict[str, Any]) -> list[str]:
    """Every part of the indexes at `paths`, in corpus order (the first index first, parts in order)."""
    parts = []
    for path in paths:
        manifest = read_manifest(path, stage, settings)
        parts += [storage.join(path, part["name"]) for part in manifest["parts"]]
    return parts


def run_token(work_dir: str, keys_paths: list[str]) -> str:
    """Names the run that writes an index: its work folder and spilled key files. A resumed run finds
    its own published index and does not write it again; another run is refused the folder."""
    spilled = [(os.path.basename(p), storage.size(p)) for p in keys_paths]  # p may be a URI
    return hashlib.sha256(json.dumps([storage.normalise(work_dir), spilled]).encode()).hexdigest()[:16]


def begin_write(path: str, stage: str, token: str) -> bool:
    """Before the parts are written: False when this run already published the index (resumed after
    the publication), True when it is to be written. Another run's index at `path` is refused, and so
    is a folder holding anything but the parts of an unfinished index."""
    if storage.exists(path):
        names = {entry.relative for entry in storage.list_files(path)} if storage.is_dir(path) else set()
        if MANIFEST in names:
            if storage.read_json(storage.join(path, MANIFEST)).get("written_by") == token:
                return False
        elif storage.is_uri(path) and names and all(PART.match(name) for name in names):
            return True  # an unfinished write in a store: its parts are rewritten, then the manifest
        raise ValueError(f"stage {stage!r}: index_write {path!r} already exists; an index is never overwritten: "
                         "name a new folder")
    storage.make_dirs(staging_dir(path))
    return True


def publish(path: str, stage: str, settings: dict[str, Any], token: str, n_parts: int) -> dict[str, Any]:
    """Write the manifest last, after every part is committed (and what killed attempts left is removed),
    then on disk rename the folder into place."""
    staging = staging_dir(path)
    listed = {entry.relative: entry for entry in storage.list_files(staging, recursive=False)}  # one listing
    parts = []
    for k in range(n_parts):
        name = part_name(k)
        metadata = pq.ParquetFile(storage.parquet_source(storage.join(staging, name))).metadata
        parts.append({"name": name, "rows": metadata.num_rows, "bytes": listed[name].size})
    ours = {part["name"] for part in parts}
    for name, entry in listed.items():  # temporary files and surplus parts of killed attempts
        if name not in ours and (name.startswith(".") or PART.match(name)):
            storage.delete(entry.location)
    manifest = {"format": FORMAT, "version": VERSION, "stage": stage, "settings": settings, "written_by": token,
                "parts": parts, "rows": sum(p["rows"] for p in parts)}
    write_json_atomic(storage.join(staging, MANIFEST), manifest)
    if not storage.is_uri(path):
        os.makedirs(os.path.dirname(staging), exist_ok=True)
        os.rename(staging, storage.normalise(path))
    return manifest
