"""What a curation run may do to its output folder: which files in it curation wrote, and the checks
made before a run writes there or `--overwrite` removes anything.

The rule: curation never deletes a file it did not write. A folder is a curation output when it holds
the run's fingerprint (`_state/pipeline.json`, written before any output); inside such a folder these
are curation's own, by the layout the executor, the pack stage and the main job write:

    _state/**, _work/**                       markers, fingerprint, intermediates of global stages
    kept/*.parquet, rejected/*.parquet        the curated documents
    stats.json, shards.json, pack.json        run stats, output part -> input file, the packing summary
    <source>/*.bin|*.index.parquet|*.json     packed token shards (a folder named in pack.json)
    job.json, manifest.json, phases.yaml, report.html, tokenizer/<its files>    the main job's outputs
    packed/                                   the job's packing run: a curation output of its own
    .<name>.tmp-<hex>                         a temporary file of an interrupted write, anywhere

Anything else (a user's notes, another program's files, an input) is foreign: `--overwrite` refuses
to run while one is there, naming it, and removes nothing.

The folder may be a URI (`s3://bucket/run`): a prefix whose keys are listed once (`curation.storage`),
the same rules applied to the keys; object stores have no empty folders to remove.
"""

from __future__ import annotations

import os
from pathlib import Path

from curation import storage
from curation.errors import CurationError
from curation.storage import TMP_NAME

FINGERPRINT = Path("_state") / "pipeline.json"
RUN_FILES = {"stats.json", "pack.json", "shards.json"}
JOB_FILES = {"job.json", "manifest.json", "phases.yaml", "report.html"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer_meta.json", "eval.json"}
TOKEN_SHARD_SUFFIXES = (".bin", ".index.parquet", ".json")

Location = Path | str  # a local path (Path) or a URI (str)


class OutputFolderError(CurationError, ValueError):
    """The output folder cannot be used as asked; the message says which file and what to do."""


def _location(root: str | Path) -> Location:
    return str(root).rstrip("/") if storage.is_uri(root) else Path(root)


def _under(root: Location, relative: str) -> Location:
    return storage.join(root, *relative.split("/")) if isinstance(root, str) else root / relative


def is_curation_output(root: str | Path) -> bool:
    try:
        marker = storage.read_json(_under(_location(root), FINGERPRINT.as_posix()))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and {"version", "sha256"} <= set(marker)


def _pack_sources(root: Location) -> set[str]:
    """Folders of packed shards: those pack.json names, and any folder holding only token-shard files."""
    try:
        summary = storage.read_json(_under(root, "pack.json"))
        return set(summary.get("sources", {}))
    except (OSError, ValueError, AttributeError):
        return set()


def foreign_files(root: str | Path) -> list[Location]:
    """Files under `root` that curation did not write (sorted), from one listing. A folder without
    curation's fingerprint is foreign as a whole: every file in it is listed."""
    root = _location(root)
    found = storage.info(root)
    if found.type == storage.pafs.FileType.NotFound:
        return []
    if found.type == storage.pafs.FileType.File:
        return [root]
    entries = [e.relative for e in storage.list_files(root)]
    if not is_curation_output(root):
        return sorted(_under(root, r) for r in entries)
    sources = _pack_sources(root)
    by_folder: dict[str, list[str]] = {}
    foreign: list[Location] = []
    for relative in entries:
        parts = relative.split("/")
        if TMP_NAME.match(parts[-1]):
            continue
        if len(parts) == 1:
            if relative not in RUN_FILES | JOB_FILES:
                foreign.append(_under(root, relative))
            continue
        by_folder.setdefault(parts[0], []).append("/".join(parts[1:]))
    for name, inside in sorted(by_folder.items()):
        if name in ("_state", "_work"):
            continue
        if name == "packed":
            foreign.extend(foreign_files(_under(root, name)))
            continue
        only_shards = all(r.endswith(TOKEN_SHARD_SUFFIXES) for r in inside)
        for relative in inside:
            depth_one = "/" not in relative
            if name in ("kept", "rejected"):
                ours = depth_one and relative.endswith(".parquet")
            elif name == "tokenizer":
                ours = depth_one and relative in TOKENIZER_FILES
            else:  # a source folder of packed shards
                ours = depth_one and relative.endswith(TOKEN_SHARD_SUFFIXES) and (name in sources or only_shards)
            if not ours:
                foreign.append(_under(root, f"{name}/{relative}"))
    return sorted(foreign, key=lambda p: Path(p).parts if isinstance(p, Path) else tuple(p.split("/")))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _within_uri(location: str, folder: str) -> bool:
    return location == folder or location.startswith(folder.rstrip("/") + "/")


def check_not_inputs(root: str | Path, input_paths: list[str]) -> None:
    """Refuse an output folder that equals, contains or lies inside an input (a run would read what it
    writes, and --overwrite would delete the inputs)."""
    if storage.is_uri(root):
        out = storage.normalise(root)
        for raw in input_paths:
            if not storage.is_uri(raw):
                continue  # a local input and an output in a store never overlap
            path = storage.normalise(raw)
            if _within_uri(path, out):
                raise OutputFolderError(
                    f"output.path {root} contains the input {raw}: a run would overwrite or delete its own "
                    "input. Choose an output folder outside the inputs")
            if _within_uri(out, path) and storage.is_dir(path):
                raise OutputFolderError(
                    f"output.path {root} lies inside the input folder {raw}: its outputs would be read as "
                    "input by the next run. Choose an output folder outside the inputs")
        return
    out = Path(os.path.abspath(os.path.expanduser(str(root))))
    resolved_out = out.resolve()
    for raw in input_paths:
        if storage.is_uri(raw):
            continue
        path = Path(os.path.abspath(raw))
        for candidate_out, candidate in ((out, path), (resolved_out, path.resolve())):
            if _within(candidate, candidate_out):
                raise OutputFolderError(
                    f"output.path {root} contains the input {raw}: a run would overwrite or delete its own "
                    "input. Choose an output folder outside the inputs")
            if _within(candidate_out, candidate) and candidate.is_dir():
                raise OutputFolderError(
                    f"output.path {root} lies inside the input folder {raw}: its outputs would be read as "
                    "input by the next run. Choose an output folder outside the inputs")


def _describe(paths: list[Location], root: Location, limit: int = 5) -> str:
    def short(p: Location) -> str:
        if isinstance(p, Path) and isinstance(root, Path) and _within(p, root):
            return str(p.relative_to(root))
        if isinstance(p, str) and isinstance(root, str) and _within_uri(p, root) and p != root:
            return p[len(root.rstrip("/")) + 1:]
        return str(p)

    shown = ", ".join(short(p) for p in paths[:limit])
    more = f" and {len(paths) - limit:,} more" if len(paths) > limit else ""
    return shown + more


def check_writable_here(root: str | Path, overwrite: bool) -> None:
    """Before a run writes into `root`: refuse a folder that holds files curation did not write when
    it is not curation's own output (a first run), or whatever `--overwrite` would have to remove."""
    root = _location(root)
    found = storage.info(root)
    if found.type == storage.pafs.FileType.NotFound:
        return
    if found.type == storage.pafs.FileType.File:
        raise OutputFolderError(f"output.path {root} is a file, not a folder")
    foreign = foreign_files(root)
    if not foreign:
        return
    if not is_curation_output(root):
        raise OutputFolderError(
            f"output folder {root} already holds files that curation did not write ({_describe(foreign, root)}): "
            "choose a new or empty folder for output.path")
    if overwrite:
        raise OutputFolderError(
            f"--overwrite would have to remove files in {root} that curation did not write "
            f"({_describe(foreign, root)}); nothing was removed. Move them away, or choose another output.path")


def remove_run_outputs(root: str | Path) -> list[Location]:
    """--overwrite: remove what curation wrote in `root` (after `check_writable_here` found nothing
    foreign), deepest first; folders are removed only once empty. Returns the files removed."""
    root = _location(root)
    if not storage.exists(root) or not is_curation_output(root):
        return []
    if foreign_files(root):  # checked by the caller; never delete around a foreign file
        raise OutputFolderError(f"{root} holds files curation did not write; nothing was removed")
    removed: list[Location] = []
    fingerprint = _under(root, FINGERPRINT.as_posix())
    for entry in storage.list_files(root):
        if entry.relative != FINGERPRINT.as_posix():
            location = _under(root, entry.relative)
            storage.delete(location)
            removed.append(location)
    storage.delete(fingerprint)  # last: an interrupted removal still leaves the folder recognisably ours
    removed.append(fingerprint)
    storage.remove_empty_dirs(root)
    return removed
