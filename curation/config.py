"""Pipeline YAML: what to read, where to write, how to execute, which stages.

```yaml
input:  {path: ../shared/data/*.jsonl.gz, format: jsonl, text_column: text, id_column: id}
output: {path: out/demo}
executor: {kind: ray, num_cpus: 2}   # or kind: local
stages:
  - {name: some_stage, param: value}
  - {name: pack, tokenizer: tok/tokenizer.json}   # a sink (curation.sink) may end the list
```

`stages` lists the stages in order; a registered sink there (`pack`) must come after every stage: it
goes to the output side, beside the kept/rejected Parquet, and sees the rows the last stage left.
Relative paths are resolved against the current directory. Configs are read with a safe YAML loader.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from curation import storage
from curation.option_types import check_options
from curation.sink import split_sinks
from curation.stage import build_stage

INPUT_FORMATS = ("auto", "parquet", "jsonl")
EMPTY_TEXT_POLICIES = ("error", "drop")
DUPLICATE_ID_POLICIES = ("rename", "error")
EXECUTOR_KINDS = ("ray", "local")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputConfig:
    path: tuple[str, ...]  # glob patterns or files; several allowed
    format: str = "auto"  # auto: by file name (.parquet, .jsonl, .jsonl.gz, .json.gz)
    text_column: str = "text"
    id_column: str | None = "id"  # missing in the data: a stable id "<shard>:<row>" is derived
    batch_rows: int = 4096  # rows per record batch for Parquet input (at most)
    # batches hold about this many bytes of text (JSONL block size; Parquet batches are cut): the rule
    # stages' working set grows with it (+78 MB at 1 MiB, +168 MB at 4 MiB, and 1 MiB is no slower)
    block_bytes: int = 1 << 20
    # a null or empty text: "drop" rejects it (counted as `empty_text` in OUT/rejected and stats), "error"
    # stops the run naming the file and line/row. Drop by default: ordinary corpora have empty rows.
    empty_text: str = "drop"
    # an id seen before in the same shard: "rename" makes it unique (`<id>#<row>`) and counts it in stats
    # (`input.renamed_ids`), "error" stops the run naming both lines/rows
    duplicate_ids: str = "rename"
    # name -> globs: each input file belongs to the first source whose globs match it; every row gets
    # that name in `source_column` (packing and tokenizer sampling go per source). Files may be given
    # here only, without `path`.
    sources: dict[str, tuple[str, ...]] | None = None
    source_column: str = "dataset"

    def __post_init__(self) -> None:
        if self.format not in INPUT_FORMATS:
            raise ValueError(f"input.format must be one of {INPUT_FORMATS}, got {self.format!r}")
        if self.empty_text not in EMPTY_TEXT_POLICIES:
            raise ValueError(f"input.empty_text must be one of {EMPTY_TEXT_POLICIES}, got {self.empty_text!r}")
        if self.duplicate_ids not in DUPLICATE_ID_POLICIES:
            raise ValueError(f"input.duplicate_ids must be one of {DUPLICATE_ID_POLICIES}, got {self.duplicate_ids!r}")
        if self.sources is not None:
            if not isinstance(self.sources, dict) or not self.sources:
                raise ValueError("input.sources maps source names to globs of their files")
            object.__setattr__(self, "sources", {str(k): tuple([v] if isinstance(v, str) else v) for k, v in self.sources.items()})
        if self.batch_rows < 1 or self.block_bytes < 1024:
            raise ValueError("input.batch_rows must be >= 1 and input.block_bytes >= 1024")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputConfig:
    path: str
    compression: str = "zstd"
    keep_work: bool = False  # keep intermediate shards of global stages after a successful run
    documents: bool = True  # write kept/ and rejected/ Parquet (false: a run whose output is a sink's own, e.g. pack)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    kind: str = "ray"
    num_cpus: int | None = None  # CPUs of the local Ray instance (default: all); ignored with address
    num_workers: int | None = None  # stage actors (default: one per CPU Ray offers)
    address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001", "host:6379")
    max_retries: int = 3  # times a shard is retried after its worker died
    start_timeout_s: float = 600  # fail when no stage worker can start (no free CPU) for this long
    dashboard: bool = True  # the local instance's Ray dashboard and state API (`ray list actors`)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTOR_KINDS:
            raise ValueError(f"executor.kind must be one of {EXECUTOR_KINDS}, got {self.kind!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    input: InputConfig
    output: OutputConfig
    executor: ExecutorConfig
    stages: tuple[dict[str, Any], ...]
    source: str = "<dict>"  # where the config came from, for messages

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        return data


def _section(raw: dict[str, Any], key: str, cls: type, where: str) -> Any:
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{where}: '{key}' must be a mapping, got {type(section).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) in '{key}': {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    # input.sources values may be one glob or a list: __post_init__ makes them tuples
    check_options(cls, {k: v for k, v in section.items() if not (cls is InputConfig and k == "sources")},
                  f"{where}: '{key}'")
    try:
        return cls(**section)
    except TypeError as exc:
        raise ValueError(f"{where}: '{key}': {exc}") from exc


def pipeline_from_dict(raw: Any, where: str = "<dict>") -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a pipeline config is a mapping with input, output, executor and stages")
    unknown = sorted(set(raw) - {"input", "output", "executor", "stages"})
    if unknown:
        raise ValueError(f"{where}: unknown top-level key(s): {', '.join(unknown)}")
    raw_input = dict(raw.get("input") or {})
    if "path" not in raw_input:
        sources = raw_input.get("sources")
        if not isinstance(sources, dict) or not sources:
            raise ValueError(f"{where}: input.path (or input.sources) is required")
        raw_input["path"] = [g for globs in sources.values() for g in ([globs] if isinstance(globs, str) else globs)]
    paths = raw_input["path"]
    raw_input["path"] = tuple([paths] if isinstance(paths, str) else paths)
    if "output" not in raw or "path" not in (raw.get("output") or {}):
        raise ValueError(f"{where}: output.path is required")
    stages = raw.get("stages") or []
    if not isinstance(stages, list):
        raise ValueError(f"{where}: 'stages' must be a list of mappings")
    config = PipelineConfig(
        input=_section({"input": raw_input}, "input", InputConfig, where),
        output=_section(raw, "output", OutputConfig, where),
        executor=_section(raw, "executor", ExecutorConfig, where),
        stages=tuple(dict(s) if isinstance(s, dict) else s for s in stages),
        source=where,
    )
    operators = []
    for position, entry in enumerate(config.stages):  # every option's type checked now, not mid-run
        try:
            operators.append(build_stage(entry))
        except ValueError as exc:
            raise ValueError(f"{where}: stages[{position}]: {exc}") from None
    try:
        split_sinks(operators)  # sinks (pack) end the list: they write what the last stage left
    except ValueError as exc:
        raise ValueError(f"{where}: stages: {exc}") from None
    return config


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """A YAML file read with the safe loader (configs are untrusted input: never yaml.load)."""
    try:
        text = storage.read_bytes(path).decode("utf-8")  # a path, or a URI (s3://...)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    return pipeline_from_dict(read_yaml(path, "pipeline config"), str(path))


def with_overrides(config: PipelineConfig, *, output: str | None = None, executor: str | None = None,
                   address: str | None = None) -> PipelineConfig:
    """The CLI's flags win over the file."""
    if output:
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, path=output))
    if executor:
        config = dataclasses.replace(config, executor=dataclasses.replace(config.executor, kind=executor))
    if address:
        config = dataclasses.replace(config, executor=dataclasses.replace(config.executor, kind="ray", address=address))
    return config
