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
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from curation.errors import CurationError

FINGERPRINT = Path("_state") / "pipeline.json"
TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")
RUN_FILES = {"stats.json", "pack.json", "shards.json"}
JOB_FILES = {"job.json", "manifest.json", "phases.yaml", "report.html"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "eval.json"}
TOKEN_SHARD_SUFFIXES = (".bin", ".index.parquet", ".json")


class OutputFolderError(CurationError, ValueError):
    """The output folder cannot be used as asked; the message says which file and what to do."""


def is_curation_output(root: Path) -> bool:
    try:
        marker = json.loads((root / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and {"version", "sha256"} <= set(marker)


def _all_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, _, filenames in os.walk(folder):
        found.extend(Path(dirpath) / name for name in filenames)
    return found


def _pack_sources(root: Path) -> set[str]:
    """Folders of packed shards: those pack.json names, and any folder holding only token-shard files."""
    try:
        summary = json.loads((root / "pack.json").read_text())
        return set(summary.get("sources", {}))
    except (OSError, ValueError, AttributeError):
        return set()


def foreign_files(root: str | Path) -> list[Path]:
    """Files under `root` that curation did not write (sorted). A folder without curation's
    fingerprint is foreign as a whole: every file in it is listed."""
    root = Path(root)
    if not root.exists():
        return []
    if not root.is_dir():
        return [root]
    if not is_curation_output(root):
        return sorted(_all_files(root))
    sources = _pack_sources(root)
    foreign: list[Path] = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if TMP_NAME.match(name):
            continue
        if entry.is_file() or entry.is_symlink():
            if name not in RUN_FILES | JOB_FILES:
                foreign.append(entry)
            continue
        if name in ("_state", "_work"):
            continue
        if name == "packed":
            foreign.extend(foreign_files(entry))
            continue
        for path in sorted(_all_files(entry)):
            if TMP_NAME.match(path.name):
                continue
            inside = path.relative_to(entry)
            if name in ("kept", "rejected"):
                ours = len(inside.parts) == 1 and path.name.endswith(".parquet")
            elif name == "tokenizer":
                ours = len(inside.parts) == 1 and path.name in TOKENIZER_FILES
            else:  # a source folder of packed shards
                ours = len(inside.parts) == 1 and path.name.endswith(TOKEN_SHARD_SUFFIXES) and \
                    (name in sources or _only_token_shards(entry))
            if not ours:
                foreign.append(path)
    return foreign


def _only_token_shards(folder: Path) -> bool:
    return all(p.name.endswith(TOKEN_SHARD_SUFFIXES) or TMP_NAME.match(p.name) for p in _all_files(folder))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_inputs(root: str | Path, input_paths: list[str]) -> None:
    """Refuse an output folder that equals, contains or lies inside an input (a run would read what it
    writes, and --overwrite would delete the inputs)."""
    out = Path(os.path.abspath(os.path.expanduser(str(root))))
    resolved_out = out.resolve()
    for raw in input_paths:
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


def _describe(paths: list[Path], root: Path, limit: int = 5) -> str:
    shown = ", ".join(str(p.relative_to(root)) if _within(p, root) else str(p) for p in paths[:limit])
    more = f" and {len(paths) - limit:,} more" if len(paths) > limit else ""
    return shown + more


def check_writable_here(root: str | Path, overwrite: bool) -> None:
    """Before a run writes into `root`: refuse a folder that holds files curation did not write when
    it is not curation's own output (a first run), or whatever `--overwrite` would have to remove."""
    root = Path(root)
    if not root.exists():
        return
    if not root.is_dir():
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


def remove_run_outputs(root: str | Path) -> list[Path]:
    """--overwrite: remove what curation wrote in `root` (after `check_writable_here` found nothing
    foreign), deepest first; folders are removed only once empty. Returns the files removed."""
    root = Path(root)
    if not root.exists() or not is_curation_output(root):
        return []
    if foreign_files(root):  # checked by the caller; never delete around a foreign file
        raise OutputFolderError(f"{root} holds files curation did not write; nothing was removed")
    removed = []
    fingerprint = root / FINGERPRINT
    for path in _all_files(root):
        if path != fingerprint:
            path.unlink()
            removed.append(path)
    fingerprint.unlink()  # last: an interrupted removal still leaves the folder recognisably ours
    removed.append(fingerprint)
    for dirpath, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
        if Path(dirpath) != root:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    return removed
