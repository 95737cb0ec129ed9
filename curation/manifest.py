"""Phase-mixing manifests: which packed sequences each training phase reads.

`PHASES.yaml` (read with a safe loader) names the packed sources and an ordered list of phases:

```yaml
root: ../out/demo/packed        # a `curation pack` output; relative to this file
seed: 0                         # fixes each source's sequence order (the same for every phase)
sources:
  web:  {}                      # folder `web` under root
  wiki: {path: wiki, max_epochs: 2}   # may be repeated up to 2 epochs
phases:
  - {name: phase1, tokens: 4_000_000, seed: 1, weights: {web: 0.8, wiki: 0.2}}
  - {name: phase2, tokens: 2_000_000, seed: 2, weights: {web: 0.4, wiki: 0.6}}
```

Weights count tokens (sequences of `seq_len`, padding included) and sum to 1. Each source has one fixed
order of its sequences (a hash of the seed and the sequence number, sorted: the same on every machine
and numpy version). Phases take consecutive runs of that order, so a phase never gets a sequence an
earlier phase was given, whatever the ratios; a source that runs out is an error naming the phase, the
source and the tokens missing, unless `max_epochs` lets it start over (a new order per epoch).

`manifest.json` is versioned (`schema_version`), names every shard with its checksums and sequence
count, and per phase and source the runs `{epoch, start, count}` of that order. Paths are relative to
`root`, and the loader refuses any that would leave it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curation import storage
from curation.tokenizer.shards import ShardError, list_shard_names, read_meta, sha256_file

SCHEMA_VERSION = 1
WEIGHT_TOLERANCE = 1e-6


class ManifestError(ValueError):
    """A phases config or manifest is wrong; the message says where and what to do."""


# --- the fixed order of a source's sequences ---------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def source_seed(seed: int, source: str, epoch: int) -> int:
    digest = hashlib.sha256(f"{seed}/{source}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sequence_order(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) defined by our own hash (not numpy's generators, whose streams may
    change between versions): the sequences sorted by splitmix64(seed + i)."""
    keys = _splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(seed))
    return np.argsort(keys, kind="stable").astype(np.int64)


# --- building -----------------------------------------------------------------------------------------


def _load_yaml(path: Location) -> dict:
    # Read through the storage layer (a path or a URI) with the safe loader: the trainer side does
    # not import the engine's config module (ARCHITECTURE.md).
    try:
        raw = yaml.safe_load(storage.read_bytes(path).decode("utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read phases config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text: {exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a phases config is a mapping with root, sources and phases")
    return raw


# Locations: a local Path, or a URI string (`s3://bucket/run/packed`) read through curation.storage.
Location = Path | str


def resolve_location(base_dir: Location, relative: str) -> Location:
    """`relative` from folder `base_dir` (a path or a URI); an absolute path or a URI stands alone."""
    if storage.is_uri(relative):
        return storage.normalise(relative)
    if storage.is_uri(base_dir):
        scheme, rest = str(base_dir).split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, relative))
    return (Path(base_dir) / relative).resolve()


def split_location(location: Location) -> tuple[Location, str]:
    """(folder, name) of a location."""
    if isinstance(location, str):
        return storage.parent(location), storage.basename(location)
    return location.parent, location.name


def _parent_dir(path: Location) -> Location:
    return storage.parent(path) if isinstance(path, str) else Path(path).resolve().parent


def _as_location(path: str | Path) -> Location:
    return str(path).rstrip("/") if storage.is_uri(path) else Path(path)


def _inside(root: Location, relative: str, what: str) -> Location:
    """root/relative, refusing absolute paths and any that leave root (.., links)."""
    if os.path.isabs(relative) or relative.startswith("~") or "://" in relative:
        raise ManifestError(f"{what}: path {relative!r} must be relative to the manifest root")
    if isinstance(root, str):
        located = resolve_location(root, relative)
        if located != root and not str(located).startswith(root.rstrip("/") + "/"):
            raise ManifestError(f"{what}: path {relative!r} leaves the manifest root {root}")
        return located
    resolved = (root / relative).resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise ManifestError(f"{what}: path {relative!r} leaves the manifest root {root}")
    return resolved


def _scan_source(root: Location, name: str, folder: str) -> dict[str, Any]:
    path = _inside(root, folder, f"source {name!r}")
    if not (storage.is_dir(path) if isinstance(path, str) else path.is_dir()):
        raise ManifestError(f"source {name!r}: folder {path} does not exist (packed shards of `curation pack`)")
    shards = []
    for shard in list_shard_names(path):
        meta = read_meta(path, shard)
        shards.append({"path": f"{folder}/{shard}", "sequences": meta["sequences"], "tokens": meta["tokens"],
                       "bin_sha256": meta["bin_sha256"], "index_sha256": meta["index_sha256"],
                       "seq_len": meta["seq_len"], "dtype": meta["dtype"], "tokenizer_sha256": meta["tokenizer_sha256"]})
    shards = [s for s in shards if s["sequences"]]
    if not shards:
        raise ManifestError(f"source {name!r}: no packed sequences in {path}")
    return {"shards": shards}


def _split_sequences(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest remainder: sequences per source summing to `total`."""
    exact = {s: w * total for s, w in weights.items()}
    counts = {s: int(math.floor(v)) for s, v in exact.items()}
    left = total - sum(counts.values())
    for source in sorted(exact, key=lambda s: (-(exact[s] - counts[s]), s))[:left]:
        counts[source] += 1
    return counts


def build_manifest(phases_path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Read PHASES.yaml, allocate each phase's sequences, return the manifest (and write it to `out`)."""
    phases_path = _as_location(phases_path)
    raw = _load_yaml(phases_path)
    unknown = set(raw) - {"root", "seed", "sources", "phases"}
    if unknown:
        raise ManifestError(f"{phases_path}: unknown key(s) {sorted(unknown)}; allowed: root, seed, sources, phases")
    if "root" not in raw:
        raise ManifestError(f"{phases_path}: `root` (the packed shards folder) is required")
    root = resolve_location(_parent_dir(phases_path), str(raw["root"]))
    seed = int(raw.get("seed", 0))
    sources_raw = raw.get("sources") or {}
    if not isinstance(sources_raw, dict) or not sources_raw:
        raise ManifestError(f"{phases_path}: `sources` must map source names to {{path, max_epochs}}")
    sources: dict[str, Any] = {}
    for name, spec in sources_raw.items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {"path", "max_epochs"}:
            raise ManifestError(f"{phases_path}: source {name!r}: give {{path: FOLDER, max_epochs: N}}")
        max_epochs = int(spec.get("max_epochs", 1))
        if max_epochs < 1:
            raise ManifestError(f"source {name!r}: max_epochs must be at least 1")
        entry = _scan_source(root, name, str(spec.get("path", name)))
        entry["sequences"] = sum(s["sequences"] for s in entry["shards"])
        entry["tokens"] = sum(s["tokens"] for s in entry["shards"])
        entry["max_epochs"] = max_epochs
        sources[name] = entry
    seq_lens = {s["seq_len"] for e in sources.values() for s in e["shards"]}
    dtypes = {s["dtype"] for e in sources.values() for s in e["shards"]}
    tokenizers = {s["tokenizer_sha256"] for e in sources.values() for s in e["shards"]}
    if len(seq_lens) != 1 or len(dtypes) != 1 or len(tokenizers) != 1:
        raise ManifestError(f"sources mix sequence lengths {sorted(seq_lens)}, dtypes {sorted(dtypes)} or tokenizers "
                            f"({len(tokenizers)}): pack every source with the same tokenizer and --seq-len")
    seq_len = seq_lens.pop()
    for entry in sources.values():
        for shard in entry["shards"]:
            for key in ("seq_len", "dtype", "tokenizer_sha256"):
                shard.pop(key)

    phases_raw = raw.get("phases")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ManifestError(f"{phases_path}: `phases` must be a list of {{name, tokens, weights, seed}}")
    used = {name: 0 for name in sources}  # positions of each source's order given out so far
    phases = []
    names = set()
    for number, phase in enumerate(phases_raw):
        where = f"phase {phase.get('name', number) if isinstance(phase, dict) else number}"
        if not isinstance(phase, dict) or set(phase) - {"name", "tokens", "weights", "seed"}:
            raise ManifestError(f"{phases_path}: {where}: give name, tokens, weights and seed")
        name = str(phase.get("name", f"phase{number + 1}"))
        where = f"phase {name!r}"
        if name in names:
            raise ManifestError(f"{phases_path}: two phases are called {name!r}")
        names.add(name)
        weights = phase.get("weights") or {}
        if not isinstance(weights, dict) or not weights:
            raise ManifestError(f"{where}: `weights` must map sources to shares of the phase's tokens")
        missing = sorted(set(weights) - set(sources))
        if missing:
            raise ManifestError(f"{where}: asks for source(s) {missing} that do not exist; sources are {sorted(sources)}")
        if any(float(w) < 0 for w in weights.values()):
            raise ManifestError(f"{where}: weights must not be negative")
        total_weight = sum(float(w) for w in weights.values())
        if abs(total_weight - 1.0) > WEIGHT_TOLERANCE:
            raise ManifestError(f"{where}: weights sum to {total_weight:.6g}, not 1 (they are shares of the phase's tokens)")
        tokens = int(phase.get("tokens", 0))
        if tokens <= 0:
            raise ManifestError(f"{where}: `tokens` (the phase's token budget) must be positive")
        total_sequences = max(1, math.ceil(tokens / seq_len))
        counts = _split_sequences(total_sequences, {s: float(w) for s, w in weights.items() if float(w) > 0})
        allocation = {}
        for source, count in sorted(counts.items()):
            if count == 0:
                continue
            entry = sources[source]
            available = entry["sequences"] * entry["max_epochs"] - used[source]
            if count > available:
                short = count - available
                raise ManifestError(
                    f"{where}: source {source!r} runs out: it needs {count:,} sequences ({count * seq_len:,} tokens) but "
                    f"only {available:,} are left after earlier phases; {short * seq_len:,} tokens are missing. Lower the "
                    f"phase's tokens or weight, add data, or allow repeats with `max_epochs` (now {entry['max_epochs']})")
            runs, position = [], used[source]
            while count:
                epoch, start = divmod(position, entry["sequences"])
                take = min(count, entry["sequences"] - start)
                runs.append({"epoch": epoch, "start": start, "count": take})
                position += take
                count -= take
            used[source] = position
            allocation[source] = runs
        phases.append({"name": name, "tokens": tokens, "seed": int(phase.get("seed", number)),
                       "weights": {s: float(w) for s, w in weights.items()}, "sequences": total_sequences,
                       "allocation": allocation})

    out_dir = _parent_dir(_as_location(out)) if out else _parent_dir(phases_path)
    manifest = {"schema_version": SCHEMA_VERSION, "root": _relative_root(root, out_dir), "seed": seed,
                "seq_len": seq_len, "dtype": dtypes.pop(), "tokenizer_sha256": tokenizers.pop(),
                "sources": sources, "phases": phases}
    if out:
        storage.write_json(out, manifest)  # whole or not at all, on disk or in a bucket
    return manifest


def _relative_root(root: Location, out_dir: Location) -> str:
    """The root as the manifest stores it: relative to the manifest's folder when both are on the same
    disk or in the same bucket (the pair moves together), else the absolute URI."""
    if isinstance(root, Path) and isinstance(out_dir, Path):
        return os.path.relpath(root, out_dir)
    root_text, out_text = str(root), str(out_dir)
    if storage.is_uri(root_text) and storage.is_uri(out_text):
        (rs, rr), (os_, orr) = root_text.split("://", 1), out_text.split("://", 1)
        if rs == os_ and rr.split("/", 1)[0] == orr.split("/", 1)[0]:
            return posixpath.relpath(rr, orr)
    if isinstance(root, Path):
        raise ManifestError(f"the manifest goes to {out_dir} but its shards are on local disk ({root}): "
                            "write it beside them, or upload the shards too")
    return root_text


# --- reading ------------------------------------------------------------------------------------------


def load_manifest(path: str | Path) -> tuple[dict[str, Any], Location]:
    """(manifest, resolved root: a Path, or a URI string for a manifest in object storage); refuses
    newer schemas and paths outside the root."""
    path = _as_location(path)
    try:
        manifest = json.loads(storage.read_bytes(path).decode("utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise ManifestError(f"{path}: not a curation manifest (no schema_version)")
    version = manifest["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version {version!r} is newer than this curation reads ({SCHEMA_VERSION}): "
                            "upgrade curation")
    for key in ("root", "seq_len", "dtype", "sources", "phases"):
        if key not in manifest:
            raise ManifestError(f"{path}: `{key}` is missing")
    try:
        root = _check_structure(path, manifest)
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"{path}: malformed manifest ({type(exc).__name__}: {exc}); rebuild it with "
                            "`curation manifest build`") from None
    return manifest, root


def _check_structure(path: Location, manifest: dict[str, Any]) -> Location:
    """Types and ranges of everything the loader reads; raises on anything off."""
    if not isinstance(manifest["root"], str) or not isinstance(manifest["sources"], dict) \
            or not isinstance(manifest["phases"], list):
        raise ManifestError(f"{path}: root must be a string, sources a mapping and phases a list")
    if not isinstance(manifest["seq_len"], int) or isinstance(manifest["seq_len"], bool) or manifest["seq_len"] < 2:
        raise ManifestError(f"{path}: seq_len must be an integer of at least 2")
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise ManifestError(f"{path}: dtype must be uint16 or uint32")
    if not _count(manifest.get("seed", 0)):
        raise ManifestError(f"{path}: seed must be a non-negative integer")
    root = resolve_location(_parent_dir(path), manifest["root"])
    for name, entry in manifest["sources"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            raise ManifestError(f"{path}: source {name!r} must have a list of shards")
        for shard in entry["shards"]:
            if not isinstance(shard, dict) or not isinstance(shard.get("path"), str) or not _count(shard.get("sequences")) \
                    or not isinstance(shard.get("bin_sha256"), str):
                raise ManifestError(f"{path}: source {name!r}: each shard needs path, sequences and bin_sha256")
        if not _count(entry.get("sequences")) or not _count(entry.get("max_epochs", 1)):
            raise ManifestError(f"{path}: source {name!r}: sequences and max_epochs must be counts")
    for phase in manifest["phases"]:
        if not isinstance(phase, dict) or not isinstance(phase.get("name"), str) or not isinstance(phase.get("allocation"), dict) \
                or not _count(phase.get("seed")) or not _count(phase.get("sequences")):
            raise ManifestError(f"{path}: each phase needs a name, a seed and an allocation")
        for source, runs in phase["allocation"].items():
            if not isinstance(runs, list) or not all(isinstance(r, dict) and all(_count(r.get(k)) for k in ("epoch", "start", "count"))
                                                     for r in runs):
                raise ManifestError(f"{path}: phase {phase['name']!r}: source {source!r}: runs must be {{epoch, start, count}}")
    _check_ranges(path, manifest, root)
    return root


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def _check_ranges(path: Location, manifest: dict[str, Any], root: Location) -> None:
    for name, entry in manifest["sources"].items():
        for shard in entry["shards"]:
            _inside(root, str(shard["path"]), f"{path}: source {name!r}")
        if entry["sequences"] != sum(int(s["sequences"]) for s in entry["shards"]):
            raise ManifestError(f"{path}: source {name!r}: sequence counts do not add up")
    for phase in manifest["phases"]:
        if sum(r["count"] for runs in phase["allocation"].values() for r in runs) != phase["sequences"]:
            raise ManifestError(f"{path}: phase {phase['name']!r}: its runs do not add up to its {phase['sequences']} sequences")
        for source, runs in phase["allocation"].items():
            if source not in manifest["sources"]:
                raise ManifestError(f"{path}: phase {phase['name']!r} reads source {source!r}, which the manifest lacks")
            n = manifest["sources"][source]["sequences"]
            for run in runs:
                if not (0 <= run["start"] and run["start"] + run["count"] <= n and run["count"] > 0 and run["epoch"] >= 0):
                    raise ManifestError(f"{path}: phase {phase['name']!r}: source {source!r}: run {run} is out of range")


def phase_of(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for phase in manifest["phases"]:
        if phase["name"] == name:
            return phase
    raise ManifestError(f"no phase {name!r} in the manifest; phases: {[p['name'] for p in manifest['phases']]}")


def validate(path: str | Path) -> list[str]:
    """Every shard exists with the checksums and counts the manifest records; returns the problems."""
    manifest, root = load_manifest(path)
    problems = []
    for name, entry in manifest["sources"].items():
        for shard in entry["shards"]:
            base = _inside(root, shard["path"], f"source {name!r}")
            folder, shard_name = split_location(base)
            try:
                meta = read_meta(folder, shard_name)
            except ShardError as exc:
                problems.append(str(exc))
                continue
            for suffix, key in ((".bin", "bin_sha256"), (".index.parquet", "index_sha256")):
                file = storage.join(folder, f"{shard_name}{suffix}") if isinstance(folder, str) else \
                    folder / f"{shard_name}{suffix}"
                if not storage.exists(file):
                    problems.append(f"{file} is missing")
                elif sha256_file(file) != shard[key]:
                    problems.append(f"{file}: sha256 does not match the manifest (changed or damaged)")
            if meta["sequences"] != shard["sequences"]:
                problems.append(f"{base}: {meta['sequences']} sequences, the manifest says {shard['sequences']}")
    return problems


def show(manifest: dict[str, Any]) -> str:
    """Tokens per source and phase, as a table."""
    seq_len = manifest["seq_len"]
    sources = list(manifest["sources"])
    header = ["phase", *sources, "total"]
    rows = [header]
    for phase in manifest["phases"]:
        counts = {s: sum(r["count"] for r in phase["allocation"].get(s, [])) for s in sources}
        total = sum(counts.values())
        rows.append([phase["name"], *[f"{counts[s] * seq_len / 1e6:,.2f}M ({counts[s] / max(total, 1):.0%})" for s in sources],
                     f"{total * seq_len / 1e6:,.2f}M"])
    used = {s: sum(r["count"] for p in manifest["phases"] for r in p["allocation"].get(s, [])) for s in sources}
    rows.append(["available", *[f"{manifest['sources'][s]['sequences'] * seq_len / 1e6:,.2f}M x{manifest['sources'][s]['max_epochs']}"
                                for s in sources], ""])
    rows.append(["left", *[f"{(manifest['sources'][s]['sequences'] * manifest['sources'][s]['max_epochs'] - used[s]) * seq_len / 1e6:,.2f}M"
                           for s in sources], ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"tokens per phase and source (seq_len {seq_len}, {manifest['dtype']})\n" + "\n".join(lines)
