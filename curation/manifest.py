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
`root`, and the loader refuses any that would leave it. In code a manifest is a `Manifest` record
(frozen dataclasses down to each run); `Manifest.from_json` checks every type, count and range of what
it reads, and `to_json` gives back the JSON that `from_json` read, value for value.
"""

from __future__ import annotations

import dataclasses
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


# --- the manifest's records ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    path: str  # relative to the manifest's root, without the .bin / .index.parquet / .json suffix
    sequences: int
    tokens: int
    bin_sha256: str
    index_sha256: str


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    shards: tuple[ShardRecord, ...]
    sequences: int  # the shards' sequences together
    tokens: int
    max_epochs: int  # times the source's sequences may be given out (a new order each epoch)


@dataclasses.dataclass(frozen=True)
class Run:
    """Positions start..start+count of the source's order for `epoch`."""

    epoch: int
    start: int
    count: int


@dataclasses.dataclass(frozen=True)
class PhaseRecord:
    name: str
    tokens: int  # the token budget asked for
    seed: int  # the phase's interleaving of its sources
    weights: dict[str, float]
    sequences: int  # the runs' counts together
    allocation: dict[str, tuple[Run, ...]]  # source -> runs of its order, in order


@dataclasses.dataclass(frozen=True)
class Manifest:
    schema_version: int
    root: str  # the packed shards' folder: relative to the manifest's folder, or a URI
    seed: int  # fixes each source's order
    seq_len: int
    dtype: str
    tokenizer_sha256: str
    sources: dict[str, SourceRecord]
    phases: tuple[PhaseRecord, ...]

    def to_json(self) -> dict[str, Any]:
        """The manifest.json value (storage.write_json writes it with sorted keys)."""
        return _plain(self)

    @classmethod
    def from_json(cls, data: Any, where: Location) -> Manifest:
        """The records of a manifest.json value; a ManifestError names the first field that is missing,
        of the wrong type or out of range (`where` names the file)."""
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ManifestError(f"{where}: not a curation manifest (no schema_version)")
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ManifestError(f"{where}: schema_version {version!r} is newer than this curation reads ({SCHEMA_VERSION}): "
                                "upgrade curation")
        fields = _Fields(data, f"{where}", "a curation manifest")
        seq_len = fields.count("seq_len")
        if seq_len < 2:
            raise ManifestError(f"{where}: seq_len must be an integer of at least 2")
        dtype = fields.text("dtype")
        if dtype not in ("uint16", "uint32"):
            raise ManifestError(f"{where}: dtype must be uint16 or uint32")
        sources = {name: _source(value, f"{where}: source {name!r}") for name, value in fields.mapping("sources").items()}
        phases = tuple(_phase(value, where, number, sources) for number, value in enumerate(fields.list("phases")))
        return cls(schema_version=version, root=fields.text("root"), seed=fields.count("seed"), seq_len=seq_len,
                   dtype=dtype, tokenizer_sha256=fields.text("tokenizer_sha256"), sources=sources, phases=phases)

    def phase(self, name: str) -> PhaseRecord:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise ManifestError(f"no phase {name!r} in the manifest; phases: {[p.name for p in self.phases]}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


class _Fields:
    """The typed fields of one JSON object, each named in the error when missing or of the wrong type."""

    def __init__(self, data: Any, where: str, what: str) -> None:
        if not isinstance(data, dict):
            raise ManifestError(f"{where} must be {what} (a JSON object), got {type(data).__name__}")
        self.data, self.where = data, where

    def _get(self, key: str, fits, kind: str) -> Any:
        if key not in self.data:
            raise ManifestError(f"{self.where}: `{key}` is missing; rebuild the manifest with `curation manifest build`")
        value = self.data[key]
        if not fits(value):
            raise ManifestError(f"{self.where}: `{key}` must be {kind}, got {value!r:.60}")
        return value

    def count(self, key: str) -> int:
        return self._get(key, _count, "a non-negative integer")

    def text(self, key: str) -> str:
        return self._get(key, lambda v: isinstance(v, str), "a string")

    def mapping(self, key: str) -> dict[str, Any]:
        return self._get(key, lambda v: isinstance(v, dict), "a mapping")

    def list(self, key: str) -> list[Any]:
        return self._get(key, lambda v: isinstance(v, list), "a list")


def _source(data: Any, where: str) -> SourceRecord:
    fields = _Fields(data, where, "a source")
    shards = []
    for number, value in enumerate(fields.list("shards")):
        shard = _Fields(value, f"{where}: shard {number}", "a shard")
        shards.append(ShardRecord(path=shard.text("path"), sequences=shard.count("sequences"), tokens=shard.count("tokens"),
                                  bin_sha256=shard.text("bin_sha256"), index_sha256=shard.text("index_sha256")))
    source = SourceRecord(shards=tuple(shards), sequences=fields.count("sequences"), tokens=fields.count("tokens"),
                          max_epochs=fields.count("max_epochs"))
    if source.sequences != sum(s.sequences for s in source.shards):
        raise ManifestError(f"{where}: sequence counts do not add up")
    return source


def _phase(data: Any, file: Location, number: int, sources: dict[str, SourceRecord]) -> PhaseRecord:
    fields = _Fields(data, f"{file}: phase {number}", "a phase")
    name = fields.text("name")
    where = f"{file}: phase {name!r}"
    weights = fields.mapping("weights")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()):
        raise ManifestError(f"{where}: weights must be numbers")
    allocation = {}
    for source, runs in fields.mapping("allocation").items():
        if source not in sources:
            raise ManifestError(f"{where} reads source {source!r}, which the manifest lacks")
        if not isinstance(runs, list):
            raise ManifestError(f"{where}: source {source!r}: runs must be a list of {{epoch, start, count}}")
        records = []
        for value in runs:
            run = _Fields(value, f"{where}: source {source!r}: run", "a run {epoch, start, count}")
            record = Run(epoch=run.count("epoch"), start=run.count("start"), count=run.count("count"))
            if record.count == 0 or record.start + record.count > sources[source].sequences:
                raise ManifestError(f"{where}: source {source!r}: run {value} is out of range")
            records.append(record)
        allocation[source] = tuple(records)
    phase = PhaseRecord(name=name, tokens=fields.count("tokens"), seed=fields.count("seed"), weights=weights,
                        sequences=fields.count("sequences"), allocation=allocation)
    if sum(r.count for runs in allocation.values() for r in runs) != phase.sequences:
        raise ManifestError(f"{where}: its runs do not add up to its {phase.sequences} sequences")
    return phase


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
    if "\0" in relative:
        raise ManifestError(f"{what}: path {relative!r} holds a NUL character")
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


def _scan_source(root: Location, name: str, folder: str, max_epochs: int) -> tuple[SourceRecord, set[tuple]]:
    """The source's record, and the (seq_len, dtype, tokenizer sha256) of its shards."""
    path = _inside(root, folder, f"source {name!r}")
    if not (storage.is_dir(path) if isinstance(path, str) else path.is_dir()):
        raise ManifestError(f"source {name!r}: folder {path} does not exist (packed shards of `curation pack`)")
    shards, formats = [], set()
    for shard in list_shard_names(path):
        meta = read_meta(path, shard)
        if meta["sequences"]:
            shards.append(ShardRecord(path=f"{folder}/{shard}", sequences=meta["sequences"], tokens=meta["tokens"],
                                      bin_sha256=meta["bin_sha256"], index_sha256=meta["index_sha256"]))
            formats.add((meta["seq_len"], meta["dtype"], meta["tokenizer_sha256"]))
    if not shards:
        raise ManifestError(f"source {name!r}: no packed sequences in {path}")
    return SourceRecord(shards=tuple(shards), sequences=sum(s.sequences for s in shards),
                        tokens=sum(s.tokens for s in shards), max_epochs=max_epochs), formats


def _split_sequences(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest remainder: sequences per source summing to `total`."""
    exact = {s: w * total for s, w in weights.items()}
    counts = {s: int(math.floor(v)) for s, v in exact.items()}
    left = total - sum(counts.values())
    for source in sorted(exact, key=lambda s: (-(exact[s] - counts[s]), s))[:left]:
        counts[source] += 1
    return counts


def build_manifest(phases_path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Read PHASES.yaml, allocate each phase's sequences, return the manifest's JSON (and write it to `out`)."""
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
    sources: dict[str, SourceRecord] = {}
    formats: set[tuple] = set()
    for name, spec in sources_raw.items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {"path", "max_epochs"}:
            raise ManifestError(f"{phases_path}: source {name!r}: give {{path: FOLDER, max_epochs: N}}")
        max_epochs = int(spec.get("max_epochs", 1))
        if max_epochs < 1:
            raise ManifestError(f"source {name!r}: max_epochs must be at least 1")
        sources[name], found = _scan_source(root, name, str(spec.get("path", name)), max_epochs)
        formats |= found
    seq_lens, dtypes, tokenizers = ({f[i] for f in formats} for i in range(3))
    if len(formats) != 1:
        raise ManifestError(f"sources mix sequence lengths {sorted(seq_lens)}, dtypes {sorted(dtypes)} or tokenizers "
                            f"({len(tokenizers)}): pack every source with the same tokenizer and --seq-len")
    seq_len, dtype, tokenizer_sha256 = formats.pop()

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
            available = entry.sequences * entry.max_epochs - used[source]
            if count > available:
                short = count - available
                raise ManifestError(
                    f"{where}: source {source!r} runs out: it needs {count:,} sequences ({count * seq_len:,} tokens) but "
                    f"only {available:,} are left after earlier phases; {short * seq_len:,} tokens are missing. Lower the "
                    f"phase's tokens or weight, add data, or allow repeats with `max_epochs` (now {entry.max_epochs})")
            runs, position = [], used[source]
            while count:
                epoch, start = divmod(position, entry.sequences)
                take = min(count, entry.sequences - start)
                runs.append(Run(epoch=epoch, start=start, count=take))
                position += take
                count -= take
            used[source] = position
            allocation[source] = tuple(runs)
        phases.append(PhaseRecord(name=name, tokens=tokens, seed=int(phase.get("seed", number)),
                                  weights={s: float(w) for s, w in weights.items()}, sequences=total_sequences,
                                  allocation=allocation))

    out_dir = _parent_dir(_as_location(out)) if out else _parent_dir(phases_path)
    manifest = Manifest(schema_version=SCHEMA_VERSION, root=_relative_root(root, out_dir), seed=seed, seq_len=seq_len,
                        dtype=dtype, tokenizer_sha256=tokenizer_sha256, sources=sources, phases=tuple(phases)).to_json()
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


def load_manifest(path: str | Path) -> tuple[Manifest, Location]:
    """(manifest, resolved root: a Path, or a URI string for a manifest in object storage); refuses
    newer schemas, malformed records and paths outside the root."""
    path = _as_location(path)
    try:
        data = json.loads(storage.read_bytes(path).decode("utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    manifest = Manifest.from_json(data, path)
    root = resolve_location(_parent_dir(path), manifest.root)
    for name, source in manifest.sources.items():
        for shard in source.shards:
            _inside(root, shard.path, f"{path}: source {name!r}")
    return manifest, root


def validate(path: str | Path) -> list[str]:
    """Every shard exists with the checksums and counts the manifest records; returns the problems."""
    manifest, root = load_manifest(path)
    problems = []
    for name, entry in manifest.sources.items():
        for shard in entry.shards:
            base = _inside(root, shard.path, f"source {name!r}")
            folder, shard_name = split_location(base)
            try:
                meta = read_meta(folder, shard_name)
            except ShardError as exc:
                problems.append(str(exc))
                continue
            for suffix, expected in ((".bin", shard.bin_sha256), (".index.parquet", shard.index_sha256)):
                file = storage.join(folder, f"{shard_name}{suffix}") if isinstance(folder, str) else \
                    folder / f"{shard_name}{suffix}"
                if not storage.exists(file):
                    problems.append(f"{file} is missing")
                elif sha256_file(file) != expected:
                    problems.append(f"{file}: sha256 does not match the manifest (changed or damaged)")
            if meta["sequences"] != shard.sequences:
                problems.append(f"{base}: {meta['sequences']} sequences, the manifest says {shard.sequences}")
    return problems


def show(manifest: Manifest) -> str:
    """Tokens per source and phase, as a table."""
    seq_len = manifest.seq_len
    sources = list(manifest.sources)
    header = ["phase", *sources, "total"]
    rows = [header]
    for phase in manifest.phases:
        counts = {s: sum(r.count for r in phase.allocation.get(s, ())) for s in sources}
        total = sum(counts.values())
        rows.append([phase.name, *[f"{counts[s] * seq_len / 1e6:,.2f}M ({counts[s] / max(total, 1):.0%})" for s in sources],
                     f"{total * seq_len / 1e6:,.2f}M"])
    used = {s: sum(r.count for p in manifest.phases for r in p.allocation.get(s, ())) for s in sources}
    rows.append(["available", *[f"{manifest.sources[s].sequences * seq_len / 1e6:,.2f}M x{manifest.sources[s].max_epochs}"
                                for s in sources], ""])
    rows.append(["left", *[f"{(manifest.sources[s].sequences * manifest.sources[s].max_epochs - used[s]) * seq_len / 1e6:,.2f}M"
                           for s in sources], ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"tokens per phase and source (seq_len {seq_len}, {manifest.dtype})\n" + "\n".join(lines)
