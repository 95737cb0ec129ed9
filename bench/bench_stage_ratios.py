"""Each stage against its raw dependency call, on the same text, one thread, in one run.

The stage side is what the pipeline runs per record batch (`__call__`, or a sink's `encode`, or a
global stage's `keys`), set up once, on Arrow record batches cut as the reader cuts them (at most
4,096 rows and about 1 MiB of text); the raw side is the dependency's own call on the same documents,
prepared the way that call needs them outside the timing (so the ratio is the stage's whole overhead):

- `lid`: fastText `multilinePredict(lines, k=1)`, with the stage's own model object, on the lines the
  stage gives it (the first 2,000 characters, line breaks folded). Where the compiled predict is built
  (stages/lid_kernels.cc) the stage does not call it: it gives the same labels and scores from the Arrow
  buffers with a word cache, so its ratio passes 1. `--lid-only` reruns just this pair and replaces its
  row in the results file.
- `quality`: `kenlm.Model.score(line)` over the lines already normalised, as `str` (KenLM's Python
  module; a 5-gram trained on half of WikiText + GUM); English text only, as the model is English.
- `tokenize` and `pack` (the sink's `encode`): fastokens `encode_batch_flat` on the batch's texts as a
  Python list, on the same tokenizer.json (out/demo/tokenizer, else one trained here). Each round
  builds the Encoders and the raw tokenizer afresh (untimed), so every timed pass starts with an empty
  fastokens word cache, as a worker meeting new text does.
- `minhash_dedup`: `keys` (words, signatures, band keys, the spilled table) against the kernel it
  calls, `signatures(words, ngram, a, b)`, with the words already split: its compiled path
  (`stages/minhash_kernels.cc`), and again its numpy path (`minhash_dedup_vs_numpy`, the issue's
  reference).

Every round runs each pair once, the stage and its raw call alternating batch by batch (so both see
the same load on a shared machine); the ratio is the median over rounds of the two CPU times' ratio,
MB/s the best round. One thread everywhere (RAYON_NUM_THREADS=1, FASTOKENS_BPE_THREADS=1); CPU time,
so that other work on the machine counts less. Results: bench/results/stage_ratios.json.

    .venv/bin/python bench/bench_stage_ratios.py [--rounds 5] [--every 3]
"""

from __future__ import annotations

import os

for _name in ("RAYON_NUM_THREADS", "FASTOKENS_BPE_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"  # before any library that reads them is imported

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, real_texts  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import read_jsonl  # noqa: E402

from curation.stage import DROP_REASON, BatchPosition, build_stage, live_mask  # noqa: E402
from curation.stages.lid import LINE_BREAKS  # noqa: E402
from curation.stages import minhash_native  # noqa: E402
from curation.stages.minhash_dedup import signatures  # noqa: E402
from curation.stages.quality import lm_text  # noqa: E402
from curation.stages.quality.models import KenlmTraining, train_kenlm  # noqa: E402
from curation.tokenizer.encode import FAST_RENEW_CHARS  # noqa: E402

BATCH_ROWS, BATCH_BYTES = 4096, 1 << 20
TARGET = 0.80


def record_batches(texts: list[str]) -> list[pa.RecordBatch]:
    """The texts in batches as the reader cuts them: at most BATCH_ROWS rows and about BATCH_BYTES."""
    out, start = [], 0
    while start < len(texts):
        stop, size = start, 0
        while stop < len(texts) and stop - start < BATCH_ROWS and (stop == start or size < BATCH_BYTES):
            size += len(texts[stop].encode())
            stop += 1
        chunk = texts[start:stop]
        out.append(pa.RecordBatch.from_pydict({"id": [str(start + i) for i in range(len(chunk))], "text": chunk,
                                               DROP_REASON: pa.nulls(len(chunk), pa.string())}))
        start = stop
    return out


def english_texts(total_mb: int) -> list[str]:
    """The shared data's English documents, repeated to about `total_mb` MB (the KenLM model is English)."""
    docs = [r["text"] for name in ("en_wikitext2_valid_test.jsonl.gz", "en_gum_docs.jsonl.gz", "en_ud_ewt_web_docs.jsonl.gz")
            for r in read_jsonl(name) if r["text"]]
    docs += [r["text"] for r in read_jsonl("web_commoncrawl_samples.jsonl.gz") if r["text"]]
    out, size = [], 0
    while size < total_mb * 1_000_000:
        for doc in docs:
            out.append(doc)
            size += len(doc.encode())
    return out


def tokenizer_file(tmp: Path) -> Path:
    existing = REPO / "out" / "demo" / "tokenizer" / "tokenizer.json"
    if existing.exists():
        return existing
    from curation.tokenizer.train import train_tokenizer

    return train_tokenizer([r["text"] for r in real_texts()][::3], tmp / "tok", vocab_size=65536)


def kenlm_models(tmp: Path) -> Path:
    wikitext, gum = read_jsonl("en_wikitext2_valid_test.jsonl.gz"), read_jsonl("en_gum_docs.jsonl.gz")
    gold = [{"id": r["id"], "text": r["text"], "lang": "en"} for r in wikitext[0::2] + gum[0::2]]
    pq.write_table(pa.Table.from_pylist(gold), tmp / "gold_en.parquet")
    train_kenlm(KenlmTraining(lang="en", inputs=[str(tmp / "gold_en.parquet")], out=tmp / "models"))
    return tmp / "models"


class Pair:
    """A stage and its raw call on the same batches: prepare (untimed, every round), then run."""

    def __init__(self, name: str, batches: list[pa.RecordBatch], stage: Callable[[], list[Callable[[], object]]],
                 raw: Callable[[], list[Callable[[], object]]], reference: str) -> None:
        self.name, self.batches, self.reference = name, batches, reference
        self.make = {"stage": stage, "raw": raw}
        self.mb = sum(pc.sum(pc.binary_length(b.column("text").cast(pa.binary()))).as_py() for b in batches) / 1e6
        self.times: dict[str, list[float]] = {"stage": [], "raw": []}

    def round(self) -> None:
        """One pass of each side over the batches, interleaved batch by batch (which side goes first
        alternates), so that both see the same load on a shared machine."""
        calls = {side: self.make[side]() for side in ("stage", "raw")}  # set-up outside the timing
        spent = {"stage": 0.0, "raw": 0.0}
        for i in range(len(self.batches)):
            for side in ("stage", "raw") if i % 2 == 0 else ("raw", "stage"):
                started = time.process_time()
                calls[side][i]()
                spent[side] += time.process_time() - started
        for side, seconds in spent.items():
            self.times[side].append(seconds)

    def ratio(self) -> float:
        """The median over rounds of raw time / stage time: the machine's drift (other work on it)
        cancels within a round."""
        return float(np.median(np.array(self.times["raw"]) / np.array(self.times["stage"])))

    def report(self) -> dict:
        return {"reference": self.reference, "text_mb": round(self.mb, 1),
                "stage_mb_s": round(self.mb / min(self.times["stage"]), 2), "raw_mb_s": round(self.mb / min(self.times["raw"]), 2),
                "ratio": round(self.ratio(), 3),
                "ratio_per_round": [round(r / t, 3) for r, t in zip(self.times["raw"], self.times["stage"])]}


def lid_pair(batches: list[pa.RecordBatch]) -> Pair:
    stage = build_stage({"name": "lid"})
    stage.setup()
    # the stage's own fastText model object: of two copies of lid.176.ftz loaded in one process, the
    # first loaded predicted 15-25% slower than the second on the same lines (measured here, three
    # times; memory placement, not the code), which a second copy for the raw side would count
    # against the stage
    model = stage._model
    lines = [pc.replace_substring_regex(pc.utf8_slice_codeunits(b.column("text"), 0, stage.config.max_chars),
                                        LINE_BREAKS, " ").to_pylist() for b in batches]

    def ours() -> list[Callable[[], object]]:
        return [partial(stage, b) for b in batches]

    def raw() -> list[Callable[[], object]]:
        return [partial(model.multilinePredict, chunk, 1, 0.0, "strict") for chunk in lines]

    return Pair("lid", batches, ours, raw, "fastText multilinePredict(k=1) on the stage's one-line prefixes")


def quality_pair(batches: list[pa.RecordBatch], models: Path) -> Pair:
    import kenlm

    from curation.stages.quality import PerplexityQuality

    stage = PerplexityQuality(model_dir=str(models), default_lang="en", lang_column="none")
    stage.setup()
    model = kenlm.Model(str(models / "en.kenlm.binary"))
    lines = [lm_text.lines(lm_text.normalise(b.column("text")))[0].to_pylist() for b in batches]

    def ours() -> list[Callable[[], object]]:
        return [partial(stage, b) for b in batches]

    def raw() -> list[Callable[[], object]]:
        def score(chunk: list[str]) -> None:
            for line in chunk:
                model.score(line)
        return [partial(score, chunk) for chunk in lines]

    return Pair("quality", batches, ours, raw, "kenlm.Model.score(line) over the normalised lines, as str")


def encode_pairs(batches: list[pa.RecordBatch], tok: Path) -> list[Pair]:
    import fastokens

    from curation.stages.pack import Pack

    text = tok.read_text(encoding="utf-8")
    lists = [b.column("text").to_pylist() for b in batches]

    def raw() -> list[Callable[[], object]]:
        fast = fastokens.Tokenizer.from_json_str(text)
        return [partial(fast.encode_batch_flat, chunk, add_special_tokens=False, split_special_tokens=True)
                for chunk in lists]

    def tokenize() -> list[Callable[[], object]]:
        stage = build_stage({"name": "tokenize", "tokenizer": str(tok)})
        stage.setup()
        assert stage._encoder.backend == "fastokens", stage._encoder.fallback_reason
        return [partial(stage, b) for b in batches]

    def pack() -> list[Callable[[], object]]:
        sink = Pack(tokenizer=str(tok))
        sink.setup()
        positions = [BatchPosition(0, "bench", 0)] * len(batches)
        rows = [pc.indices_nonzero(live_mask(b)) for b in batches]
        return [partial(sink.encode, b, p, r) for b, p, r in zip(batches, positions, rows)]

    reference = f"fastokens encode_batch_flat on the batch's texts as a list ({tok.relative_to(REPO) if tok.is_relative_to(REPO) else tok.name})"
    return [Pair("tokenize", batches, tokenize, raw, reference), Pair("pack_encode", batches, pack, raw, reference)]


def minhash_pairs(batches: list[pa.RecordBatch]) -> list[Pair]:
    stage = build_stage({"name": "minhash_dedup"})
    stage.setup()
    words = [stage.words(b.column("text"), None) for b in batches]
    offsets = [0]
    for b in batches:
        offsets.append(offsets[-1] + b.num_rows)

    def ours() -> list[Callable[[], object]]:
        return [partial(stage.keys, b, BatchPosition(0, "bench", o)) for b, o in zip(batches, offsets)]

    def raw() -> list[Callable[[], object]]:
        return [partial(signatures, w, stage.config.ngram, stage._a, stage._b) for w in words]

    def numpy_raw() -> list[Callable[[], object]]:
        return [partial(numpy_signatures, w, stage.config.ngram, stage._a, stage._b) for w in words]

    return [Pair("minhash_dedup", batches, ours, raw,
                 "minhash_dedup.signatures(words, ngram, a, b), words already split (its compiled kernel)"),
            Pair("minhash_dedup_vs_numpy", batches, ours, numpy_raw,
                 "the numpy signature kernel (the path without stages/minhash_kernels.cc), words already split")]


def numpy_signatures(words, ngram: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`signatures` on its numpy path, the compiled kernel set aside for the call."""
    saved = minhash_native.signatures_into
    minhash_native.signatures_into = lambda *args: False
    try:
        return signatures(words, ngram, a, b)
    finally:
        minhash_native.signatures_into = saved


def renewal_seconds(tok: Path) -> float:
    """CPU seconds to build fastokens' tokenizer again (Encoder renews it every FAST_RENEW_CHARS)."""
    import fastokens

    text = tok.read_text(encoding="utf-8")
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        fastokens.Tokenizer.from_json_str(text)
        best = min(best, time.process_time() - started)
    return best


def lid_only(batches: list[pa.RecordBatch], rounds: int) -> None:
    """The lid pair alone, its row replaced in bench/results/stage_ratios.json (the other rows kept)."""
    pair = lid_pair(batches)
    for round_ in range(rounds):
        pair.round()
        print(f"round {round_ + 1}: lid {pair.times['raw'][-1] / pair.times['stage'][-1]:.3f}", flush=True)
    path = REPO / "bench" / "results" / "stage_ratios.json"
    report = json.loads(path.read_text())
    report["stages"]["lid"] = pair.report()
    report["below_target"] = sorted(n for n, s in report["stages"].items() if s["ratio"] < TARGET)
    print(json.dumps(report["stages"]["lid"], indent=2))
    path.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--every", type=int, default=3, help="every n-th document of the shared data (3: about 19 MB)")
    parser.add_argument("--english-mb", type=int, default=20)
    parser.add_argument("--lid-only", action="store_true", help="only the lid pair; replace its row in the results")
    args = parser.parse_args()
    texts = [r["text"] for r in real_texts()][::args.every]
    batches = record_batches(texts)
    if args.lid_only:
        lid_only(batches, args.rounds)
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        tok = tokenizer_file(tmp)
        pairs = [lid_pair(batches), quality_pair(record_batches(english_texts(args.english_mb)), kenlm_models(tmp)),
                 *encode_pairs(batches, tok), *minhash_pairs(batches)]
        for round_ in range(args.rounds):
            for pair in pairs:
                pair.round()
            print(f"round {round_ + 1}: " + ", ".join(f"{p.name} {p.times['raw'][-1] / p.times['stage'][-1]:.3f}" for p in pairs),
                  flush=True)
        renew = renewal_seconds(tok)
    stages = {p.name: p.report() for p in pairs}
    chars = sum(len(t) for t in texts)
    encode_s = min(pairs[2].times["stage"])
    report = {
        "text": f"1 document in {args.every} of ../shared/data ({len(texts):,} documents, {len(batches)} batches); "
                f"quality: its English documents repeated to {args.english_mb} MB",
        "cores": 1, "rounds": args.rounds,
        "timing": "CPU time; ratio: median over rounds of raw / stage (alternating batch by batch); MB/s: best round",
        "target_ratio": TARGET, "stages": stages,
        "below_target": sorted(n for n, s in stages.items() if s["ratio"] < TARGET),
        "fastokens_renewal": {"cpu_s": round(renew, 3), "every_chars": FAST_RENEW_CHARS,
                              "share_of_encoding": round(renew / (encode_s * FAST_RENEW_CHARS / chars), 3)},
    }
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "stage_ratios.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
