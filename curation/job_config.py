"""The main job's sections (`quality_models`, `tokenizer`, `pack`, `phases`, `report`) as frozen
dataclasses, checked when the job config is loaded, as stage options are (curation/option_types.py): an
unknown key or a value of the wrong type is named with the file and the section before any work starts.

Each default is defined once, where the code that uses it lives: the sample's in tokenizer/sample.py, the
vocabulary's in tokenizer/train.py, the packing options' in the `pack` stage's `Config`, the phases' in
curation/manifest.py (a phase or source option left out here stays out of OUT/phases.yaml).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from curation.errors import CurationError
from curation.option_types import check_options
from curation.stage import stage_class
from curation.tokenizer.sample import DEFAULT_BUDGET_MB, DEFAULT_SHARES, GROUP_COLUMN, SampleSpec
from curation.tokenizer.train import DEFAULT_METHOD, METHODS, UINT16_VOCAB, check_vocab_size

SECTIONS = ("quality_models", "tokenizer", "pack", "phases", "report")
# Documents of OUT/kept held out of the tokenizer's sample for its evaluation, by a hash of the id: 2% of
# the ids of ../shared/data is 3,787 of 194,054 documents and 1.07 of 56.2 MB before curation, enough for
# bytes per token per group and next to nothing beside a sample of tens of MB. At most `eval_mb` per group
# are encoded (the evaluation's time stays bounded on a large corpus).
HOLDOUT_FRACTION = 0.02
EVAL_MB = 4.0
# KenLM bucket cut-offs from at least 50 held-out gold documents (English WikiText + GUM gave 14 at every
# 20th: the tail cut-off then moves over 0.317-0.374 with the draw, 0.335-0.357 with 50)
MIN_HOLDOUT_DOCS = 50


class JobConfigError(CurationError, ValueError):
    """A job section is wrong; the message names the file, the section and the key."""

    exit_code = 2


def _field_default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifierGold:
    gold: tuple[str, ...]  # gold documents: the positive class
    negative: tuple[str, ...]  # raw web documents: the negative class


@dataclasses.dataclass(frozen=True, kw_only=True)
class QualityModelsSection:
    """Quality models trained first when `dir` lacks them (curation train-lm)."""

    dir: str
    kenlm: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # language -> gold files
    classifier: dict[str, ClassifierGold] = dataclasses.field(default_factory=dict)
    min_holdout_docs: int = MIN_HOLDOUT_DOCS
    calibrate: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # language -> cut-off documents


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerSection:
    """The BPE trained on a language-balanced sample of OUT/kept, less a held-out slice."""

    vocab_size: int = UINT16_VOCAB
    budget_mb: float = DEFAULT_BUDGET_MB
    shares: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SHARES))
    seed: int = _field_default(SampleSpec, "seed")
    group_column: str = GROUP_COLUMN
    holdout_fraction: float = HOLDOUT_FRACTION
    eval_mb: float = EVAL_MB
    method: str = DEFAULT_METHOD

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"option 'method' must be one of {METHODS}, got {self.method!r}")
        if self.eval_mb <= 0:
            raise ValueError(f"option 'eval_mb' must be positive, got {self.eval_mb}")
        check_vocab_size(self.vocab_size)
        self.sample()  # the shares, budget and held-out fraction checked now, not after curation

    def sample(self) -> SampleSpec:
        return SampleSpec(shares=dict(self.shares), budget_bytes=int(self.budget_mb * 1e6), seed=self.seed,
                          group_column=self.group_column, holdout_fraction=float(self.holdout_fraction))


def _pack_default(name: str) -> Any:
    return _field_default(stage_class("pack").Config, name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PackSection:
    """OUT/kept packed per source by the `pack` stage; its defaults are that stage's."""

    seq_len: int = _pack_default("seq_len")
    strategy: str = _pack_default("strategy")
    window: int = _pack_default("window")
    dtype: str = _pack_default("dtype")

    def __post_init__(self) -> None:
        # the stage's own range checks, now (the tokenizer it gets is the job's, trained later)
        stage_class("pack").Config(tokenizer="tokenizer.json", **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhaseSourceSection:
    path: str | None = None  # folder under OUT/packed (manifest default: the source's name)
    max_epochs: int | None = None  # (manifest default: 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhaseSection:
    name: str | None = None  # (manifest default: phase1, phase2, ...)
    tokens: int
    seed: int | None = None  # (manifest default: the phase's position)
    weights: dict[str, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhasesSection:
    """OUT/phases.yaml (with `root: packed`) and the manifest built from it (curation/manifest.py)."""

    seed: int | None = None  # (manifest default: 0)
    sources: dict[str, PhaseSourceSection]
    phases: tuple[PhaseSection, ...]

    def to_yaml_dict(self) -> dict[str, Any]:
        """The section as OUT/phases.yaml holds it: the options given, in the order of the fields."""
        return _given(self)


def _given(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _given(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, dict):
        return {k: _given(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_given(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSections:
    """The sections a job config has (None: the step is not run)."""

    quality_models: QualityModelsSection | None = None
    tokenizer: TokenizerSection | None = None
    pack: PackSection | None = None
    phases: PhasesSection | None = None
    report: bool = False


def _build(cls: type, raw: Any, file: str, key: str) -> Any:
    """`cls` from its YAML mapping at `key` of `file`: unknown keys, missing keys and wrong types named
    (check_options, as for stage options), nested sections built the same way, lists made tuples; then
    the class's own checks."""
    where = f"{file}: '{key}'"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobConfigError(f"{where} must be a mapping, got {type(raw).__name__} {raw!r:.60}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(raw) - set(fields)))
    if unknown:
        raise JobConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in raw and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise JobConfigError(f"{where}: {', '.join(missing)} required")
    try:
        check_options(cls, raw, where)
    except ValueError as exc:
        raise JobConfigError(str(exc)) from None
    hints = typing.get_type_hints(cls)
    values = {name: _convert(value, hints[name], file, f"{key}.{name}") for name, value in raw.items()}
    try:
        return cls(**values)
    except ValueError as exc:
        raise JobConfigError(f"{where}: {exc}") from None


def _convert(value: Any, hint: Any, file: str, key: str) -> Any:
    """A checked YAML value as `hint` holds it: a nested section built, lists as tuples."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _convert(value, next(a for a in typing.get_args(hint) if a is not type(None)), file, key)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_convert(v, item, file, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        item = typing.get_args(hint)[1]
        return {k: _convert(v, item, file, f"{key}.{k}") for k, v in value.items()}
    return value


def sections_from_dict(raw: dict[str, Any], file: str) -> JobSections:
    """The job sections of a config mapping (the rest is the pipeline's), checked. A section given
    empty (`tokenizer:`) has every default."""
    hints = typing.get_type_hints(JobSections)
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        if name not in raw:
            continue
        if name == "report":
            if not isinstance(raw[name], bool | None):
                raise JobConfigError(f"{file}: 'report' must be true or false, got {raw[name]!r:.60}")
            sections[name] = bool(raw[name])
        else:
            section_class = next(a for a in typing.get_args(hints[name]) if a is not type(None))
            sections[name] = _build(section_class, raw[name], file, name)
    if "pack" in sections and "tokenizer" not in sections:
        raise JobConfigError(f"{file}: `pack` needs a `tokenizer` section (the vocabulary to pack with)")
    if "phases" in sections and "pack" not in sections:
        raise JobConfigError(f"{file}: `phases` needs a `pack` section (the sources it mixes)")
    return JobSections(**sections)
