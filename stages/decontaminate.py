"""`decontaminate`: find documents that contain evaluation items (benchmark leakage) and drop, cut or mark them.

The evaluation sets are read from JSONL or Parquet files (local paths or URIs that `pyarrow.fs` opens,
optionally `.gz`), the text of each item from the configured `fields` (a string, a list of strings such
as `choices`, or nested lists and mappings of strings; each string is a segment of its own, so no n-gram
straddles two fields). Both sides are tokenised and normalised the same way (`ngram_index.tokenize`:
NFKC, lower case, punctuation and white space only separate tokens, each Han/Kana character a token).

n-grams: word `ngram` (13) as in the GPT-3 and Llama reports. Chinese/Japanese segments (most tokens
Han/Kana) use `ngram_cjk` characters. A segment shorter than its n but at least `min_ngram` (8, GPT-3's
smallest N) or `min_ngram_cjk` tokens long is indexed whole: most MMLU-style questions are shorter than 13
words and would otherwise be invisible. Shorter segments (answer options like "Paris") are not indexed.
Measured (1,000 UD Chinese wiki sentences as items against 86 K MSRA news and review documents that do
not contain them; 1,604 UD English web sentences against WikiText, GUM and the web sample): character
8-grams hit 33 clean documents ("中国电影史上第一", "德国足球甲级联赛"), 10-grams and longer none, so
`min_ngram_cjk` is 10 and `ngram_cjk` 13 (an English word is about 1.5 Chinese characters, but most
Chinese questions are 20-60 characters long: 13 keeps 97% of the sentences indexable, 20 only 82%).
Word 5-grams hit 163 clean documents ("for the rest of the"), 8-grams none: GPT-3's minimum of 8 holds.

Not every n-gram may contaminate (a missed leak is worse than an extra drop, but one n-gram that is in
every document must not drop them all):
- an n-gram found in more than `max_segments_per_ngram` distinct segments across the benchmarks is a
  template ("which of the following is", instructions repeated in every item), not an item. Segments
  are counted distinct by their text, so a reading passage shared by 30 questions (SQuAD, RACE) still
  counts once;
- an n-gram with fewer than `min_content_tokens` tokens that are not stop words (English function
  words, Chinese/Japanese function characters) or with fewer distinct tokens than half its length
  ("0 0 0 0 ...", table rows) is not distinctive.
GPT-3 also ignored 13-grams found in more than 10 training documents; that needs a count over the whole
corpus, and documents here are decided one batch at a time. Instead the per-item metrics show any item
that hits suspiciously many documents.

A document is contaminated by an item when at least `min_ngram_hits` (1) of its windows match the
item's n-grams. `policy`:
- `drop`: drop_reason `decontaminated:<benchmark>` (the first listed benchmark it hits);
- `cut` (GPT-3): the matching windows plus `cut_margin` (200) characters on each side are removed,
  the pieces left under `min_piece_chars` (200) are discarded too, and the document is dropped (same
  reason) when more than `max_pieces` (10) pieces or none are left;
- `annotate`: the text stays; `contaminated_by` lists `benchmark:item_id` per row (empty when clean).
Metrics: `docs:<benchmark>` (documents hit), `item:<benchmark>:<item_id>` (documents per item),
`ngram_hits:<benchmark>`, and for `cut` `cut:<benchmark>` and `bytes_removed`.

Why a batch stage and not a global one: a decision needs only the document and the evaluation index,
which is small (MMLU's 14 K items give about a million n-grams, 8 bytes each) and known before the run.
Every worker builds the same index in `setup()` and checks its shards independently, so on Ray it scales
over shards like the rule stages, with no spill of corpus n-grams, shuffle or extra pass. The evaluation
files are read once when the stage is built (on the driver: a missing file or field is reported before
any work starts, and workers on a cluster need no access to them); the items travel with the stage.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.errors import CurationError
from curation.stage import TEXT, Stage, drop_rows, live_mask, register_stage, set_column
from curation.stages.gopher_quality import STOP_WORDS_CJK
from curation.stages.ngram_index import NgramIndex, TokenStream, token_hasher, tokenize
from curation.stages.regex_spans import sanitize

log = logging.getLogger(__name__)

POLICIES = ("drop", "cut", "annotate")
# English function words (pronouns, articles, auxiliaries, prepositions, conjunctions).
STOP_WORDS_EN = tuple("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours yourself
yourselves s t""".split())
STOP_TOKENS = frozenset(STOP_WORDS_EN) | frozenset(STOP_WORDS_CJK) | frozenset("の に は を が で と た し て も".split())


class EvalFileError(CurationError, ValueError):
    """An evaluation file is missing or not what the config says; the message names the file."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Benchmark:
    name: str
    path: tuple[str, ...]  # one or more JSONL/Parquet files or URIs
    fields: tuple[str, ...]  # top-level fields whose strings are the item's text
    id_field: str | None = None  # default: the item's position in the file ("0", "1", ...)

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"benchmark name {self.name!r}: a non-empty name without ':'")
        paths = (self.path,) if isinstance(self.path, str) else tuple(self.path)
        fields = (self.fields,) if isinstance(self.fields, str) else tuple(self.fields)
        if not paths or not fields:
            raise ValueError(f"benchmark {self.name!r}: give at least one path and one field")
        object.__setattr__(self, "path", paths)
        object.__setattr__(self, "fields", fields)


@dataclasses.dataclass(frozen=True)
class Items:
    """Every evaluation item's segments, flattened."""

    benchmark: list[str]  # per item
    item_id: list[str]  # per item
    segments: list[str]  # every segment of every item
    segment_item: list[int]  # the item of each segment


# --- reading evaluation files ------------------------------------------------------------------------


def _open(path: str):
    """A local path or a URI (s3://, gs://, ...), through the engine's one filesystem layer."""
    try:
        stream = storage.open_binary(path)
    except FileNotFoundError:
        raise EvalFileError(f"evaluation file not found: {path}") from None
    except OSError as exc:  # StorageError included: it names the store, never a secret
        raise EvalFileError(f"evaluation file {path}: cannot open it ({exc})") from None
    return gzip.GzipFile(fileobj=stream) if path.lower().endswith(".gz") else stream


def _strings(value: Any) -> Iterator[str]:
    """The strings inside a field value: itself, or those of its list elements or mapping values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for element in value:
            yield from _strings(element)
    elif isinstance(value, dict):
        for element in value.values():
            yield from _strings(element)


def _rows(path: str) -> Iterator[tuple[str, dict]]:
    """(where, row) for every record of a JSONL or Parquet evaluation file."""
    lower = path.lower()
    if lower.endswith((".parquet", ".pq", ".parquet.gz")):
        with _open(path) as handle:
            try:
                table = pq.read_table(io.BytesIO(handle.read()))
            except (pa.ArrowInvalid, OSError) as exc:
                raise EvalFileError(f"evaluation file {path}: not a readable Parquet file ({exc})") from None
        for number, row in enumerate(table.to_pylist()):
            yield f"{path}: row {number}", row
        return
    if not lower.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")):
        raise EvalFileError(f"evaluation file {path}: give a .jsonl or .parquet file (optionally .gz)")
    with _open(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise EvalFileError(f"evaluation file {path}: line {number}: not valid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise EvalFileError(f"evaluation file {path}: line {number}: a JSON {type(row).__name__}, "
                                        "expected an object")
                yield f"{path}: line {number}", row
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise EvalFileError(f"evaluation file {path}: cannot read it ({exc})") from None


def read_benchmarks(benchmarks: tuple[Benchmark, ...]) -> Items:
    """Read every benchmark's items; errors name the file, the line or row, and the field."""
    out = Items([], [], [], [])
    for bench in benchmarks:
        for path in bench.path:
            seen_fields: set[str] = set()
            rows = 0
            for position, (where, row) in enumerate(_rows(path)):
                rows += 1
                if bench.id_field is not None:
                    if row.get(bench.id_field) is None:
                        raise EvalFileError(f"evaluation file {where}: no id field {bench.id_field!r} "
                                            f"(benchmark {bench.name!r}; fields: {', '.join(row) or 'none'})")
                    item_id = str(row[bench.id_field])
                else:
                    item_id = str(position) if len(bench.path) == 1 else f"{path.rsplit('/', 1)[-1]}#{position}"
                item = len(out.item_id)
                out.benchmark.append(bench.name)
                out.item_id.append(item_id)
                for field in bench.fields:
                    if field in row:
                        seen_fields.add(field)
                        for segment in _strings(row[field]):
                            out.segments.append(segment)
                            out.segment_item.append(item)
            if rows == 0:
                raise EvalFileError(f"evaluation file {path}: no items (benchmark {bench.name!r})")
            missing = [f for f in bench.fields if f not in seen_fields]
            if missing:
                raise EvalFileError(f"evaluation file {path}: no row has the field(s) {', '.join(map(repr, missing))} "
                                    f"(benchmark {bench.name!r}; its first row has: {', '.join(_first_fields(path))})")
    return out


def _first_fields(path: str) -> list[str]:
    for _, row in _rows(path):
        return list(row)
    return []


# --- the index ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexRules:
    ngram: int = 13
    min_ngram: int = 8
    ngram_cjk: int = 13
    min_ngram_cjk: int = 10
    max_segments_per_ngram: int = 10
    min_content_tokens: int = 3


def stop_flags(tokens: TokenStream) -> np.ndarray:
    return pc.is_in(tokens.normalised, value_set=pa.array(sorted(STOP_TOKENS), pa.string())) \
        .to_numpy(zero_copy_only=False)


def _distinct_counts(hashes: np.ndarray, starts: np.ndarray, n: int, chunk: int = 1 << 16) -> np.ndarray:
    """Distinct token hashes in each window of n tokens starting at `starts`."""
    out = np.empty(len(starts), dtype=np.int64)
    offsets = np.arange(n, dtype=np.int64)
    for lo in range(0, len(starts), chunk):
        window = np.sort(hashes[starts[lo:lo + chunk, None] + offsets], axis=1)
        out[lo:lo + chunk] = (window[:, 1:] != window[:, :-1]).sum(axis=1) + 1
    return out


def build_index(items: Items, rules: IndexRules) -> tuple[NgramIndex, dict[str, int]]:
    """The n-gram index of the evaluation segments, and counts of what it left out and why."""
    tokens = tokenize(sanitize(pa.array(items.segments, pa.string())))
    hasher = token_hasher(tokens)
    lengths = np.diff(tokens.row_offsets)
    first = tokens.row_offsets[:-1]
    cjk_count = np.bincount(tokens.parent[tokens.cjk], minlength=len(lengths)) if len(tokens) else np.zeros(len(lengths))
    is_cjk = cjk_count * 2 > lengths
    full_n = np.where(is_cjk, rules.ngram_cjk, rules.ngram)
    min_n = np.where(is_cjk, rules.min_ngram_cjk, rules.min_ngram)
    stops = np.concatenate([[0], np.cumsum(stop_flags(tokens))]) if len(tokens) else np.zeros(1, dtype=np.int64)
    # Segments are told apart by their whole text (hash of all their tokens): a passage shared by
    # many items is one segment for the commonness rule.
    segment_key = hasher.window(first, lengths)
    report = {"segments": len(lengths), "segments_too_short": int((lengths < min_n).sum())}
    starts_all, n_all, seg_all = [], [], []
    for n in sorted(set(full_n.tolist()) | set(lengths[(lengths >= min_n) & (lengths < full_n)].tolist())):
        # windows of n tokens: every window of segments at least full_n long, or whole shorter segments
        long_segs = np.flatnonzero((full_n == n) & (lengths >= n))
        whole = np.flatnonzero((lengths == n) & (lengths >= min_n) & (lengths < full_n))
        counts = lengths[long_segs] - n + 1
        seg = np.concatenate([np.repeat(long_segs, counts), whole]).astype(np.int64)
        within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        start = np.concatenate([first[long_segs].repeat(counts) + within, first[whole]]).astype(np.int64)
        if not len(start):
            continue
        content = n - (stops[start + n] - stops[start])
        distinct = _distinct_counts(tokens.hashes, start, n)
        keep = (content >= rules.min_content_tokens) & (distinct * 2 >= n)
        report["ngrams_not_distinctive"] = report.get("ngrams_not_distinctive", 0) + int((~keep).sum())
        starts_all.append(start[keep])
        n_all.append(np.full(int(keep.sum()), n, dtype=np.int64))
        seg_all.append(seg[keep])
    if not starts_all:
        return NgramIndex.build(*(np.zeros(0, dtype=t) for t in (np.uint64, np.uint64, np.int64, np.int64))), report
    start, n, seg = np.concatenate(starts_all), np.concatenate(n_all), np.concatenate(seg_all)
    keys = hasher.window(start, n)
    # commonness: distinct segment texts per n-gram
    pairs = np.unique(np.stack([keys, segment_key[seg]], axis=1), axis=0)
    common_keys, spread = np.unique(pairs[:, 0], return_counts=True)
    common = common_keys[spread > rules.max_segments_per_ngram]
    keep = ~np.isin(keys, common)
    report["ngrams_common"] = int(len(np.unique(keys[~keep])))
    start, n, seg, keys = start[keep], n[keep], seg[keep], keys[keep]
    prefix_len = int(n.min()) if len(n) else 1
    index = NgramIndex.build(keys, hasher.window(start, prefix_len), n,
                             np.asarray(items.segment_item, dtype=np.int64)[seg])
    report["ngrams"] = len(index.keys)
    return index, report


# --- the stage ---------------------------------------------------------------------------------------


def _cut(text: str, spans: list[tuple[int, int]], margin: int, min_piece: int) -> list[str]:
    """The pieces of `text` left when each span plus `margin` characters either side is removed,
    without pieces under `min_piece` characters."""
    pieces, position = [], 0
    for start, end in sorted(spans):
        start, end = max(start - margin, 0), min(end + margin, len(text))
        if start > position:
            pieces.append(text[position:start])
        position = max(position, end)
    pieces.append(text[position:])
    return [p for p in pieces if len(p.strip()) >= min_piece]


@register_stage("decontaminate")
class Decontaminate(Stage):
    """Evaluation-set leakage: n-gram overlap with benchmark items; drop, cut (GPT-3) or annotate documents."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        benchmarks: tuple[Benchmark, ...]  # [{name, path, fields, id_field}, ...]
        policy: str = "drop"
        # the index's rules: defaults in one place, IndexRules (the measurement behind them is there)
        ngram: int = IndexRules.ngram
        min_ngram: int = IndexRules.min_ngram
        ngram_cjk: int = IndexRules.ngram_cjk
        min_ngram_cjk: int = IndexRules.min_ngram_cjk
        max_segments_per_ngram: int = IndexRules.max_segments_per_ngram
        min_content_tokens: int = IndexRules.min_content_tokens
        min_ngram_hits: int = 1
        cut_margin: int = 200
        min_piece_chars: int = 200
        max_pieces: int = 10
        column: str = "contaminated_by"

        def __post_init__(self) -> None:
            given = [self.benchmarks] if isinstance(self.benchmarks, (dict, Benchmark)) else list(self.benchmarks or [])
            benches = []
            for b in given:
                if isinstance(b, dict):
                    unknown = sorted(set(b) - {f.name for f in dataclasses.fields(Benchmark)})
                    if unknown:
                        raise ValueError(f"benchmark {b.get('name')!r}: unknown key(s) {', '.join(unknown)}; "
                                         "it takes name, path, fields, id_field")
                    b = Benchmark(**b)
                benches.append(b)
            if not benches:
                raise ValueError("give at least one benchmark: [{name, path, fields}]")
            names = [b.name for b in benches]
            if len(set(names)) != len(names):
                raise ValueError(f"benchmark names must differ: {', '.join(names)}")
            object.__setattr__(self, "benchmarks", tuple(benches))
            if self.policy not in POLICIES:
                raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
            if not 1 <= self.min_ngram <= self.ngram or not 1 <= self.min_ngram_cjk <= self.ngram_cjk:
                raise ValueError("need 1 <= min_ngram <= ngram and 1 <= min_ngram_cjk <= ngram_cjk")
            if self.min_ngram_hits < 1 or self.max_segments_per_ngram < 1:
                raise ValueError("min_ngram_hits and max_segments_per_ngram must be >= 1")

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.items = read_benchmarks(self.config.benchmarks)

    def setup(self) -> None:
        c = self.config
        rules = IndexRules(**{f.name: getattr(c, f.name) for f in dataclasses.fields(IndexRules)})
        self.index, report = build_index(self.items, rules)
        names = [b.name for b in c.benchmarks]
        self._bench_of_item = np.array([names.index(b) for b in self.items.benchmark], dtype=np.int64)
        self._labels = np.array([f"{b}:{i}" for b, i in zip(self.items.benchmark, self.items.item_id)], dtype=object)
        log.info("decontaminate: %d items, %s; index %.1f MB", len(self.items.item_id), report, self.index.nbytes / 1e6)

    def contamination(self, text: pa.Array, offsets: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, TokenStream, "Hits"]:
        """(doc, item) pairs with at least min_ngram_hits matching windows, and the hits behind them."""
        tokens = tokenize(sanitize(text), offsets)
        hits = self.index.lookup(tokens)
        which, item = self.index.items_of(hits.entry)
        doc = hits.doc[which]
        if self.config.min_ngram_hits > 1 and len(doc):
            # distinct windows per (doc, item)
            triples = np.unique(np.stack([doc, item, hits.token[which]], axis=1), axis=0)
            pairs, count = np.unique(triples[:, :2], axis=0, return_counts=True)
            pairs = pairs[count >= self.config.min_ngram_hits]
        else:
            pairs = np.unique(np.stack([doc, item], axis=1), axis=0) if len(doc) else np.zeros((0, 2), dtype=np.int64)
        return pairs[:, 0], pairs[:, 1], which, tokens, hits

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        c = self.config
        names = [b.name for b in c.benchmarks]
        live = np.flatnonzero(live_mask(batch).to_numpy(zero_copy_only=False))
        text = pc.take(batch.column(TEXT), pa.array(live))
        doc, item, which, tokens, hits = self.contamination(text)
        bench = self._bench_of_item[item]
        # metrics: documents per benchmark and per item, matching windows per benchmark
        _, window_items = self.index.items_of(hits.entry)
        window_bench = np.unique(np.stack([which, self._bench_of_item[window_items]], axis=1), axis=0)[:, 1] \
            if len(which) else np.zeros(0, dtype=np.int64)
        for b, count in zip(*np.unique(window_bench, return_counts=True)):
            self.metrics[f"ngram_hits:{names[b]}"] += int(count)
        for b in np.unique(bench):
            self.metrics[f"docs:{names[b]}"] += int(len(np.unique(doc[bench == b])))
        for i, count in zip(*np.unique(item, return_counts=True)):
            self.metrics[f"item:{self._labels[i]}"] += int(count)
        if c.policy == "annotate":
            return set_column(batch, c.column, self._labels_column(live[doc], item, batch.num_rows))
        # per document, the first listed benchmark it hits
        first = np.full(len(live), len(names), dtype=np.int64)
        np.minimum.at(first, doc, bench)
        hit_docs = np.flatnonzero(first < len(names))
        if not len(hit_docs):
            return batch
        reason = np.full(batch.num_rows, None, dtype=object)
        reason[live[hit_docs]] = [f"decontaminated:{names[b]}" for b in first[hit_docs]]
        if c.policy == "cut":
            batch, kept = self._cut(batch, live[hit_docs], first[hit_docs])
            reason[live[hit_docs[kept]]] = None
        array = pa.array(reason.tolist(), pa.string())
        return drop_rows(batch, pc.is_valid(array), array)

    def _labels_column(self, rows: np.ndarray, item: np.ndarray, n_rows: int) -> pa.Array:
        """Per row, the sorted `benchmark:item_id` labels of the items it contains (empty when clean)."""
        labels = self._labels[item].astype(str) if len(item) else np.zeros(0, dtype=str)
        order = np.lexsort((labels, rows))
        offsets = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
        values = pa.array(labels[order].tolist(), pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(pa.string()))

    def _cut(self, batch: pa.RecordBatch, rows: np.ndarray, first: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
        """Cut the windows that match a contaminating item, with the margin, out of the documents at `rows`
        (tokenised again, with offsets, and a Python loop over these contaminated documents only); which
        of them keep something. `first`: each one's first benchmark."""
        c = self.config
        names = [b.name for b in c.benchmarks]
        texts = pc.take(batch.column(TEXT), pa.array(rows))
        doc, item, _, tokens, hits = self.contamination(texts, offsets=True)
        contaminating = set(zip(doc.tolist(), item.tolist()))
        which, hit_item = self.index.items_of(hits.entry)
        spans: dict[int, list[tuple[int, int]]] = {}
        for w, i in zip(which.tolist(), hit_item.tolist()):
            d = int(hits.doc[w])
            if (d, i) in contaminating:
                t = int(hits.token[w])
                spans.setdefault(d, []).append((int(tokens.start[t]), int(tokens.end[t + hits.length[w] - 1])))
        originals = texts.to_pylist()
        new_text = list(originals)
        kept = np.zeros(len(rows), dtype=bool)
        for d, original in enumerate(originals):
            pieces = _cut(original, spans.get(d, []), c.cut_margin, c.min_piece_chars)
            if pieces and len(pieces) <= c.max_pieces:
                new_text[d] = "\n".join(pieces)
                kept[d] = True
                self.metrics[f"cut:{names[first[d]]}"] += 1
                self.metrics["bytes_removed"] += len(original.encode()) - len(new_text[d].encode())
        position = np.full(batch.num_rows, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        gathered = pc.take(pa.array(new_text, pa.string()), pa.array(np.maximum(position, 0)))
        text = pc.if_else(pa.array(position >= 0), gathered, batch.column(TEXT))
        return set_column(batch, TEXT, text), kept
