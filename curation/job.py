"""The main job: raw text to a trainer-ready manifest, from one config, every step resumable.

A pipeline YAML with any of these extra sections runs them around the curation stages, in order:

    quality_models: {dir, kenlm: {LANG: [gold...]}, classifier: {LANG: {gold: [...], negative: [...]}},
                     min_holdout_docs, calibrate: {LANG: [documents for the bucket cut-offs...]}}
        trained first when `dir` lacks them (curation train-lm)
    (the pipeline itself: input, output, executor, stages -> OUT/kept, OUT/rejected, OUT/stats.json)
    tokenizer: {vocab_size, budget_mb, shares, seed, group_column, holdout_fraction, eval_mb, method}
        trained on a language-balanced sample of OUT/kept, less a held-out slice (by a hash of the
        document id) on which it is evaluated -> OUT/tokenizer/tokenizer.json, OUT/tokenizer/eval.json
    pack: {seq_len, strategy, window, dtype}
        OUT/kept tokenized and packed per source (the input's `dataset` column) -> OUT/packed
    phases: {seed, sources, phases}
        the phase manifest over OUT/packed -> OUT/phases.yaml, OUT/manifest.json
    report: true
        OUT/report.html (self-contained)

Each section is a frozen dataclass of curation/job_config.py, checked when the config is loaded.
A step whose output exists is skipped, so running the same command again resumes where it stopped
(the curation and pack runs resume shard by shard themselves; the manifest is rebuilt from the shards'
metadata and written only when it changed). `job.json` records each step's time.

`output.path` may be a URI (`s3://bucket/run`): every step reads and writes through `curation.storage`,
so OUT/tokenizer, OUT/packed, the manifest and the report land in the bucket like kept and rejected,
and nothing another node needs is left on one machine's disk.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curation import storage
from curation.config import PipelineConfig, pipeline_from_dict, read_yaml, with_overrides
from curation.executor import RunOptions, make_backend, run_pipeline
from curation.io import write_json_atomic
from curation.job_config import SECTIONS, JobSections, PackSection, PhasesSection, QualityModelsSection, \
    TokenizerSection, sections_from_dict
from curation.manifest import build_manifest
from curation.report import write_report
from curation.stages.quality.models import KenlmTraining, read_meta, train_classifier, train_kenlm
from curation.tokenizer.encode import Encoder
from curation.tokenizer.evaluate import bytes_per_token, evaluate, read_tokenizer_meta
from curation.tokenizer.sample import SampleSpec, held_out
from curation.tokenizer.train import train_from_shards

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Job:
    pipeline: PipelineConfig
    sections: JobSections
    source: str

    @property
    def out(self) -> Path | str:
        """OUT: a local path, or a URI string (object storage)."""
        path = self.pipeline.output.path
        return str(path).rstrip("/") if storage.is_uri(path) else Path(path)

    def at(self, *parts: str) -> Path | str:
        """OUT/part/...: a Path on disk, a URI in object storage."""
        out = self.out
        return storage.join(out, *parts) if isinstance(out, str) else out.joinpath(*parts)


def load_job(path: str | Path, **overrides: Any) -> Job:
    path = Path(path)
    raw = read_yaml(path, "job config")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a pipeline config is a mapping")
    sections = sections_from_dict(raw, str(path))
    pipeline = pipeline_from_dict({k: v for k, v in raw.items() if k not in SECTIONS}, str(path))
    pipeline = with_overrides(pipeline, **overrides)
    return Job(pipeline, sections, str(path))


def is_job(path: str | Path) -> bool:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and any(k in raw for k in SECTIONS)


def _train_quality_models(spec: QualityModelsSection) -> None:
    folder = Path(spec.dir)
    meta = read_meta(folder) if (folder / "quality.json").exists() else {}
    for lang, gold in spec.kenlm.items():
        if lang not in meta.get("kenlm", {}):
            log.info("training the KenLM quality model for %s", lang)
            calibrate = list(spec.calibrate[lang]) if lang in spec.calibrate else None
            train_kenlm(KenlmTraining(lang=lang, inputs=list(gold), out=folder, min_holdout_docs=spec.min_holdout_docs,
                                      calibrate=calibrate))
    for lang, sides in spec.classifier.items():
        if lang not in meta.get("classifier", {}):
            log.info("training the quality classifier for %s", lang)
            train_classifier(lang, list(sides.gold), list(sides.negative), folder)


def _train_tokenizer(job: Job, spec: TokenizerSection, backend) -> Path | str:
    target = job.at("tokenizer", "tokenizer.json")
    if storage.exists(target):
        return target
    return train_from_shards([str(job.at("kept"))], job.at("tokenizer"), spec.sample(), vocab_size=spec.vocab_size,
                             method=spec.method, backend=backend)


def _evaluate_tokenizer(tokenizer: Path | str, kept: Path | str, max_bytes: int) -> dict[str, Any]:
    """Bytes per token per group on the held-out slice of OUT/kept (never in the training sample), beside
    the same measure on the text the sample was drawn from (the tokenizer's own `evaluate`, which skips the
    held-out slice): in-sample numbers flatter the tokenizer (Chinese 5.11 against 3.12 held out)."""

    spec = SampleSpec(**read_tokenizer_meta(tokenizer)["sample"])
    report = evaluate(tokenizer, [str(kept)], False)
    pool = report.pop("groups")
    report["groups"], report["held_out"] = {}, {"fraction": spec.holdout_fraction, "id_column": spec.id_column,
                                                 "max_bytes_per_group": max_bytes, "docs": 0, "bytes": 0}
    texts: dict[str, list[str]] = {}
    used = dict.fromkeys(spec.shares, 0)
    for batch in held_out([str(kept)], spec):
        groups = batch.column(spec.group_column).to_pylist() if spec.group_column in batch.schema.names else [None] * batch.num_rows
        for text, group in zip(batch.column("text").to_pylist(), groups):
            group = group if group in spec.shares else "other"
            size = len(text.encode("utf-8"))
            report["held_out"]["docs"] += 1
            report["held_out"]["bytes"] += size
            if group in used and used[group] + size <= max_bytes:  # bounded: the first documents in corpus order
                texts.setdefault(group, []).append(text)
                used[group] += size
    encoder = Encoder(tokenizer, "auto")
    report["vocabulary_used_on_training_text"] = report.pop("vocabulary_used_on_held_out", None)
    ids = []
    for group, chunk in texts.items():
        ours, used_ids = bytes_per_token(encoder, chunk)
        ids.append(used_ids)
        row = {"docs": len(chunk), "bytes": used[group], "bytes_per_token": round(ours, 4)}
        if group in pool:
            row["training_text_docs"] = pool[group]["docs"]
            row["training_text_bytes_per_token"] = pool[group]["bytes_per_token"]
        report["groups"][group] = row
    report["vocabulary_used_on_held_out"] = round(len(np.unique(np.concatenate(ids))) / encoder.tokenizer.get_vocab_size(), 4) if ids else 0.0
    return report


def _pack(job: Job, tokenizer: Path | str, spec: PackSection, options: RunOptions) -> Path | str:
    packed = job.at("packed")
    stage = {"name": "pack", "tokenizer": str(tokenizer), "source_column": job.pipeline.input.source_column,
             **dataclasses.asdict(spec)}
    config = pipeline_from_dict({
        "input": {"path": [str(job.at("kept"))], "format": "parquet"},
        "output": {"path": str(packed), "documents": False},
        "executor": dataclasses.asdict(job.pipeline.executor),
        "stages": [stage],
    }, f"{job.source} (pack)")
    run_pipeline(config, dataclasses.replace(options, overwrite=False))
    return packed


def _manifest(job: Job, spec: PhasesSection) -> Path | str:
    """OUT/phases.yaml and OUT/manifest.json, each written only when its content changed: the manifest
    is built again from the shards' metadata (one small read per shard, no hashing), so a rerun after a
    changed phases section or a repacking is never served a stale manifest, and one after nothing
    changed writes nothing."""
    phases_path = job.at("phases.yaml")
    text = yaml.safe_dump({"root": "packed", **spec.to_yaml_dict()}, sort_keys=False).encode("utf-8")
    if not storage.is_file(phases_path) or storage.read_bytes(phases_path) != text:
        storage.write_bytes(phases_path, text)
    target = job.at("manifest.json")
    manifest = build_manifest(phases_path)  # the same folder as the target: the same relative root
    if not storage.is_file(target) or storage.read_json(target) != manifest:
        storage.write_json(target, manifest)
    return target


def run_job(job: Job, options: RunOptions | None = None) -> dict[str, Any]:
    """Run every configured step; returns what job.json records."""
    options = options or RunOptions()
    timings: dict[str, float] = {}
    record: dict[str, Any] = {"config": job.source, "steps": timings}

    def step(name: str, fn, *args):
        started = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - started, 1)
        log.info("%s done in %.1f s", name, timings[name])
        return result

    s = job.sections
    if s.quality_models is not None:
        step("quality_models", _train_quality_models, s.quality_models)
    with make_backend(job.pipeline.executor) as backend:  # one Ray instance for every step
        stats = step("curation", run_pipeline, job.pipeline, options)
        record["curation"] = {"kept_docs": stats["output"]["kept_docs"], "kept_bytes": stats["output"]["kept_bytes"]}
        tokenizer = None
        if s.tokenizer is not None:
            tokenizer = step("tokenizer", _train_tokenizer, job, s.tokenizer, backend)
        if s.pack is not None:
            step("pack", _pack, job, tokenizer, s.pack, options)
    if s.phases is not None:
        step("manifest", _manifest, job, s.phases)
    if tokenizer is not None and s.report:
        target = job.at("tokenizer", "eval.json")
        if not storage.exists(target):
            max_bytes = int(s.tokenizer.eval_mb * 1e6)
            write_json_atomic(target, step("tokenizer_eval", _evaluate_tokenizer, tokenizer, job.at("kept"), max_bytes))
    previous = job.at("job.json")
    if storage.exists(previous):  # a resumed job: keep the times of the steps done before
        old = storage.read_json(previous).get("steps", {})
        for name, seconds in old.items():
            if timings.get(name, 0) < 1.0 and seconds > timings.get(name, 0):
                timings[name] = seconds
    write_json_atomic(previous, record)
    if s.report:
        models = s.quality_models
        record["report"] = str(step("report", write_report, job.out, models.dir if models else None,
                                    {lang: list(files) for lang, files in models.kenlm.items()} if models else {}))
        write_json_atomic(previous, record)
    return record
