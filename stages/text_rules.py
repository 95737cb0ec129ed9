"""Vectorised text primitives for the rule stages: pure functions over Arrow arrays, one row per document.

Everything works on a whole batch at once: words, lines and n-grams are flattened into one Arrow array
with the index of their document (`parent`), dictionary-encoded to integer ids, and counted with numpy.
No per-document Python loop runs, which is what makes the rule stages several times faster than
per-document implementations.

Words follow the published definitions: whitespace-separated tokens (Gopher, C4). For languages written
without spaces (Chinese, Japanese) every Han, Hiragana or Katakana character counts as a word, and runs
of other characters split on white space as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import TEXT, drop_rows, live_mask
from curation.stages import text_rules_native as rules_native
from curation.stages.code_point_tables import cached

CJK_CHAR = r"([\p{Han}\p{Hiragana}\p{Katakana}])"
CJK_LANGUAGES = ("zh", "ja")
# Sentence-final punctuation, Latin and CJK (full-width and closing quotes after a full stop).
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "。", "！", "？", "”", "」", "』", "．", "｡")
ELLIPSIS = ("...", "…")


@dataclass
class Tokens:
    """The tokens (words or lines) of a batch of documents, flattened."""

    values: pa.Array  # string, all tokens of all documents in order
    parent: np.ndarray  # int64, document index of each token
    counts: np.ndarray  # int64, tokens per document
    n_docs: int

    @classmethod
    def from_lists(cls, lists: pa.ListArray) -> "Tokens":
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        counts = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
        values = pc.list_flatten(lists)
        parent = np.repeat(np.arange(len(lists), dtype=np.int64), counts)
        return cls(values, parent, counts, len(lists))

    def per_doc_sum(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.parent, weights=weights, minlength=self.n_docs)

    def per_doc_count(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.parent[mask], minlength=self.n_docs).astype(np.int64)

    def lengths(self) -> np.ndarray:
        return pc.utf8_length(self.values).to_numpy(zero_copy_only=False).astype(np.int64)

    def ids(self) -> np.ndarray:
        """Integer id per token, equal for equal strings within the batch."""
        encoded = pc.dictionary_encode(self.values)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def to_numpy_bool(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def cjk_mask(langs: pa.Array | None, n: int, cjk_languages=CJK_LANGUAGES) -> np.ndarray:
    if langs is None or pa.types.is_null(langs.type):  # no `lang`, or one null all through (JSONL: type null)
        return np.zeros(n, dtype=bool)
    return to_numpy_bool(pc.is_in(langs, value_set=pa.array(list(cjk_languages), pa.string())))


def words(text: pa.Array, cjk: np.ndarray) -> Tokens:
    """Whitespace words; in CJK documents each Han/Kana character is a word of its own."""
    if cjk.any():
        spaced = pc.replace_substring_regex(text, CJK_CHAR, r" \1 ")
        text = pc.if_else(pa.array(cjk), spaced, text)
    # Split keeps an empty token for leading/trailing white space (and gives [""] for ""): trim first,
    # then drop empty tokens.
    tokens = Tokens.from_lists(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text)))
    empty = pc.equal(pc.binary_length(tokens.values), 0)
    if pc.any(empty).as_py():
        keep = pc.invert(empty)
        parent = tokens.parent[to_numpy_bool(keep)]
        tokens = Tokens(pc.filter(tokens.values, keep), parent,
                        np.bincount(parent, minlength=tokens.n_docs).astype(np.int64), tokens.n_docs)
    return tokens


def lines(text: pa.Array) -> Tokens:
    """Lines as `str.split("\\n")` gives them."""
    return Tokens.from_lists(pc.split_pattern(text, "\n"))


def non_blank(tokens: Tokens) -> Tokens:
    """The tokens that hold more than white space (blank lines are not "duplicate lines")."""
    keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(tokens.values)), 0)
    keep_np = to_numpy_bool(keep)
    parent = tokens.parent[keep_np]
    return Tokens(pc.filter(tokens.values, keep), parent, np.bincount(parent, minlength=tokens.n_docs).astype(np.int64),
                  tokens.n_docs)


def paragraphs(text: pa.Array) -> Tokens:
    """Paragraphs: separated by two or more newlines, after trimming the document."""
    return Tokens.from_lists(pc.split_pattern_regex(pc.utf8_trim_whitespace(text), r"\n{2,}"))


def ends_with_any(values: pa.Array, suffixes: tuple[str, ...]) -> np.ndarray:
    result = np.zeros(len(values), dtype=bool)
    for suffix in suffixes:
        result |= to_numpy_bool(pc.ends_with(values, suffix))
    return result


def starts_with_any(values: pa.Array, prefixes: tuple[str, ...]) -> np.ndarray:
    result = np.zeros(len(values), dtype=bool)
    for prefix in prefixes:
        result |= to_numpy_bool(pc.starts_with(values, prefix))
    return result


def duplicate_elements(tokens: Tokens, copies: np.ndarray | None = None) -> np.ndarray:
    """True for each token equal to an earlier token of the same document (the first copy is not a duplicate);
    with `copies` (per document), only from the token's copies[doc] + 1-th occurrence on."""
    if len(tokens.values) == 0:
        return np.zeros(0, dtype=bool)
    ids = tokens.ids()
    key = tokens.parent * (int(ids.max()) + 1) + ids
    if copies is not None:
        return occurrence_rank(key) >= copies[tokens.parent]
    _, first = np.unique(key, return_index=True)
    duplicate = np.ones(len(key), dtype=bool)
    duplicate[first] = False
    return duplicate


def occurrence_rank(key: np.ndarray) -> np.ndarray:
    """Per element, how many equal keys come before it (0 for a first occurrence)."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    run_start = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    run_length = np.diff(np.concatenate([run_start, [len(key)]]))
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = np.arange(len(key)) - np.repeat(run_start, run_length)
    return rank


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 0.0)


_MIX = np.uint64(0x9E3779B97F4A7C15)
_MUL = np.uint64(0xBF58476D1CE4E5B9)
_DOC = np.uint64(0xD6E8FEB86659FD93)


@dataclass
class NgramStats:
    top_chars: np.ndarray  # per document: characters of its most frequent n-gram times its count (0 unless >= 2)
    duplicate_chars: np.ndarray  # per document: characters of words covered by repeated n-grams


def ngram_stats(word_tokens: Tokens, word_ids: np.ndarray, word_lengths: np.ndarray,
                sizes: list[int], joiner: np.ndarray | None = None,
                copies: np.ndarray | None = None) -> dict[int, NgramStats]:
    """Gopher's n-gram repetition measures for every document of a batch and every n in `sizes`.

    An n-gram's characters are its words' characters plus the n-1 spaces between them, as in
    `" ".join(words)` (`joiner`, per document: 1, or 0 for CJK text, which has no spaces). The top
    n-gram is the most frequent one, ties to the one seen first; it counts only when seen at least twice
    (deliberately unlike datatrove, which counts a lone first n-gram: one occurrence is not repetition).
    Duplicate characters are those of words covered by an occurrence of an n-gram that appeared earlier
    in the document (the first occurrence is not counted), each word once; with `copies` (per document),
    an occurrence counts from the n-gram's copies[doc] + 1-th on.
    Hashes grow one word at a time (64-bit, so collisions are negligible), and counting uses a hash
    table (`pandas.factorize`) rather than a sort.
    """
    import pandas as pd  # pandas (40 MB) in the workers that run the rules, never the driver

    n_docs, n_words = word_tokens.n_docs, len(word_ids)
    parent = word_tokens.parent
    cumulative = np.concatenate([[0], np.cumsum(word_lengths)])
    results: dict[int, NgramStats] = {}
    u = word_ids.astype(np.uint64)
    h = np.zeros(n_words, dtype=np.uint64)
    for n in range(1, max(sizes) + 1):
        m = n_words - n + 1
        if m <= 0:
            break
        with np.errstate(over="ignore"):
            h = (h[:m] ^ (u[n - 1:n - 1 + m] + np.uint64(n) * _MIX)) * _MUL
            h ^= h >> np.uint64(29)
        if n not in sizes:
            continue
        starts = np.flatnonzero(parent[:m] == parent[n - 1:n - 1 + m])  # n-gram within one document
        top, dup = np.zeros(n_docs), np.zeros(n_docs)
        if len(starts):
            docs = parent[starts]
            with np.errstate(over="ignore"):
                key = h[starts] ^ (docs.astype(np.uint64) * _DOC)
            codes, _ = pd.factorize(key)
            counts = np.bincount(codes)
            spaces = (n - 1) * (joiner[docs] if joiner is not None else 1)
            chars = cumulative[starts + n] - cumulative[starts] + spaces
            # Codes are numbered in order of first appearance: a new maximum is a first occurrence.
            seen_before = np.concatenate([[-1], np.maximum.accumulate(codes)[:-1]])
            repeated = codes <= seen_before
            counted = repeated if copies is None else occurrence_rank(codes) >= copies[docs]
            # The top n-gram is the most frequent one (Gopher, Rae et al. 2021, table A1: "the fraction of
            # characters contained within the most frequently occurring n-gram"), not the one with most
            # characters times count. Ties go to the n-gram seen first, as datatrove's find_top_duplicate
            # (Counter.most_common keeps insertion order). `docs` is sorted and codes are numbered in order
            # of first appearance, so per document: the largest count over its first occurrences, then
            # the first occurrence that has it.
            first = ~repeated
            first_docs, first_count = docs[first], counts[codes[first]]
            run_starts = np.flatnonzero(np.concatenate([[True], first_docs[1:] != first_docs[:-1]]))
            run_of = np.cumsum(np.concatenate([[False], first_docs[1:] != first_docs[:-1]]))
            best = np.maximum.reduceat(first_count, run_starts)[run_of]
            winner = np.flatnonzero(first_count == best)
            winner = winner[np.concatenate([[True], first_docs[winner][1:] != first_docs[winner][:-1]])]
            value = first_count[winner] * chars[first][winner]
            top[first_docs[winner]] = np.where(first_count[winner] > 1, value, 0)
            if counted.any():
                begin = starts[counted]
                cover = np.bincount(begin, minlength=n_words + 1) - np.bincount(begin + n, minlength=n_words + 1)
                covered = np.cumsum(cover[:n_words]) > 0
                dup = np.bincount(parent[covered], weights=word_lengths[covered], minlength=n_docs)
        results[n] = NgramStats(top, dup)
    for n in sizes:
        results.setdefault(n, NgramStats(np.zeros(n_docs), np.zeros(n_docs)))
    return results


# --- sentences -----------------------------------------------------------------------------------

# C4 counts sentences with NLTK's punkt (the reference `c4_utils.py`), whose English model knows
# abbreviations and initials; punkt needs its model files, which a worker cannot download, so these rules
# stand in for it. A period after one of these does not end a sentence when another word follows on the
# line: a title or an initial ("Dr. Smith", "H. M. Stanley", "Jennifer M. Anderson", "r. 1963").
TITLES = ("mr", "mrs", "ms", "dr", "prof", "rev", "hon", "st", "gen", "col", "lt", "sgt", "capt", "cmdr", "adm", "gov",
          "sen", "rep", "pres", "messrs", "mme", "mlle", "fr", "mt", "ft", "supt", "atty", "insp")
# ...and after these, or a word with inner periods ("U.S.", "e.g.", "a.m."), when the next word starts in
# lower case or with a digit ("c. 1933", "No. 5", "Feb. 13", "Inc. is"); before a capital they may end one.
ABBREVIATIONS = ("etc", "vs", "cf", "al", "approx", "ca", "fl", "no", "nos", "vol", "vols",
                 "pp", "ch", "chap", "fig", "figs", "eq", "ed", "eds", "trans", "jan", "feb", "mar", "apr", "jun",
                 "jul", "aug", "sep", "sept", "oct", "nov", "dec", "inc", "ltd", "co", "corp", "bros", "dept", "univ",
                 "est", "ave", "blvd", "rd", "jr", "sr", "op", "cit", "ibid", "viz", "esp", "incl", "govt", "ref", "sec",
                 "para", "min", "hr", "hrs", "oz", "lb", "lbs", "pl", "sing", "lit", "orig", "resp", "var")
_OPENERS = r"(\[\"'“‘"  # opening brackets and quotes, as a regular-expression class body
SENTENCE_END_LATIN = r"[.!?]+['\"”)]*$"  # a whitespace token that ends a sentence, unless it is an abbreviation
CJK_ENDS, CJK_CLOSERS = "[。！？]", "[”」』）]"  # CJK sentence ends, and closing quotes after them
SENTENCE_END_CJK = CJK_ENDS + "+" + CJK_CLOSERS + "*"  # CJK sentence ends need no space after them


def sentence_counts(text: pa.Array) -> np.ndarray:
    """Sentences per string (at least one): Latin ends are whitespace tokens ending in . ! or ? (and closing
    quotes), except the abbreviations and initials above and an ellipsis before a lower-case word; CJK
    ends are 。！？ anywhere."""
    tokens = Tokens.from_lists(pc.utf8_split_whitespace(text))
    values, parent = tokens.values, tokens.parent
    end = to_numpy_bool(pc.match_substring_regex(values, SENTENCE_END_LATIN))
    if end.any():
        nonempty = to_numpy_bool(pc.greater(pc.binary_length(values), 0))
        # the next non-empty token of the same string
        position = np.flatnonzero(nonempty)
        following = np.full(len(values), -1, dtype=np.int64)
        same = parent[position[1:]] == parent[position[:-1]]
        following[position[:-1][same]] = position[1:][same]
        has_next = following >= 0
        next_lower = np.zeros(len(values), dtype=bool)
        starts_lower = to_numpy_bool(pc.match_substring_regex(values, r"^[" + _OPENERS + r"]*[\p{Ll}\pN]"))
        next_lower[has_next] = starts_lower[following[has_next]]
        period = to_numpy_bool(pc.ends_with(values, ".")) & ~to_numpy_bool(pc.ends_with(values, ".."))
        core = pc.utf8_lower(pc.replace_substring_regex(values, r"^[" + _OPENERS + r"]+|\.$", ""))
        initial = to_numpy_bool(pc.match_substring_regex(core, r"^\pL$"))
        title = to_numpy_bool(pc.is_in(core, value_set=pa.array(TITLES, pa.string())))
        abbreviation = (to_numpy_bool(pc.is_in(core, value_set=pa.array(ABBREVIATIONS, pa.string())))
                        | to_numpy_bool(pc.match_substring_regex(core, r"^\pL+(\.\pL+)+$")))
        ellipsis = to_numpy_bool(pc.ends_with(values, "..."))
        not_end = (period & has_next & (initial | title | (abbreviation & next_lower))) | (ellipsis & next_lower)
        end &= ~not_end
    latin = tokens.per_doc_count(end)
    cjk = pc.count_substring_regex(text, SENTENCE_END_CJK).to_numpy(zero_copy_only=False)
    return np.maximum(latin + cjk, 1)


# --- Treebank-like words -----------------------------------------------------------------------------

# NLTK's word_tokenize (Treebank rules) splits punctuation off words: "Hello, world." is 4 tokens,
# "don't" is "do" + "n't", "1,000", "e-mail" and "U.S" stay whole, "..." is one token. This expression
# counts the same way without NLTK: a word with inner - . , / between letters or digits, a clitic
# ('s, 't, 're...) as its own token, a run of periods or dashes, or any other single symbol.
TREEBANK_TOKEN = r"[\pL\pN_]+(?:[-.,/][\pL\pN_]+)*|['’][\pL]+|\.{2,}|-{2,}|[^\s\pL\pN_]"


def treebank_word_counts(text: pa.Array) -> np.ndarray:
    """Words per string as NLTK's Treebank tokenizer would count them, approximately (see TREEBANK_TOKEN)."""
    return pc.count_substring_regex(text, TREEBANK_TOKEN).to_numpy(zero_copy_only=False).astype(np.int64)


# --- the Gopher repetition measures, compiled or in numpy -----------------------------------------

SPACE, CJK, LETTER = 1, 2, 4
# The further classes the document-rule kernels read (tr_quality, tr_fineweb, tr_c4 in text_rules.cc).
TRIM, WORD, RE_SPACE, LOWER_NUM, OPENER, CJK_END, CJK_CLOSE, LOWER_LETTER = (8 << k for k in range(8))


@functools.cache
def _code_points() -> tuple[np.ndarray, pa.Array]:
    """Every code point but the surrogates, as numbers and as one-character strings."""
    points = np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)
    return points, pa.array(np.frombuffer(points.astype("<u4").tobytes(), dtype="<U1"), pa.string())


@functools.cache
def unicode_classes() -> np.ndarray:
    """The classes of every code point (see _build_unicode_classes), cached on disk across processes."""
    return cached("rule_classes", _build_unicode_classes)


def _build_unicode_classes() -> np.ndarray:
    """The classes of every code point (uint16), from the Arrow functions and expressions the numpy path
    uses, so that the kernels and the numpy path agree by construction: SPACE as utf8_split_whitespace
    splits, CJK, LETTER (\\pL), TRIM (what utf8_trim_whitespace removes), WORD and RE_SPACE (TREEBANK_TOKEN's
    [\\pL\\pN_] and \\s), LOWER_NUM and OPENER (sentence_counts' next-word test), CJK_END and CJK_CLOSE,
    LOWER_LETTER (\\pL after utf8_lower)."""
    points, chars = _code_points()
    classes = np.zeros(0x110000, np.uint16)

    def mark(bit: int, values: pa.Array) -> None:
        classes[points[to_numpy_bool(values)]] |= bit

    def regex(pattern: str, values: pa.Array = chars) -> pa.Array:
        return pc.match_substring_regex(values, pattern)

    mark(SPACE, pc.utf8_is_space(chars))
    mark(CJK, regex(CJK_CHAR))
    mark(LETTER, regex(r"\pL"))
    mark(TRIM, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(chars)), 0))
    mark(WORD, regex(r"[\pL\pN_]"))
    mark(RE_SPACE, regex(r"\s"))
    mark(LOWER_NUM, regex(r"[\p{Ll}\pN]"))
    mark(OPENER, regex("[" + _OPENERS + "]"))
    mark(CJK_END, regex(CJK_ENDS))
    mark(CJK_CLOSE, regex(CJK_CLOSERS))
    mark(LOWER_LETTER, regex(r"\pL", pc.utf8_lower(chars)))
    classes[0] = 0  # numpy reads code point 0 as an empty string; it is in no class
    return classes


@functools.cache
def unicode_flags() -> np.ndarray:
    """SPACE | CJK | LETTER per code point (uint8), for tr_repetition."""
    return (unicode_classes() & (SPACE | CJK | LETTER)).astype(np.uint8)


@functools.cache
def lower_ascii() -> np.ndarray:
    """See _build_lower_ascii; cached on disk across processes."""
    return cached("rule_lower_ascii", _build_lower_ascii)


def _build_lower_ascii() -> np.ndarray:
    """Per code point, the ASCII byte utf8_lower makes of it, or 0 where its lower case is not ASCII
    (the c4 kernel looks for ASCII phrases in lower-cased lines; "K", the Kelvin sign, lower-cases to "k")."""
    points, chars = _code_points()
    lowered = pc.utf8_lower(chars)
    ascii_ = to_numpy_bool(pc.equal(pc.binary_length(lowered), 1))
    first = np.frombuffer(lowered.buffers()[2], np.uint8)[np.frombuffer(lowered.buffers()[1], np.int32)[:-1]
                                                          [:len(points)][ascii_]]
    table = np.zeros(0x110000, np.uint8)
    table[points[ascii_]] = first
    table[0] = 0
    return table


def native_library(native: bool | None):
    """The compiled kernels where wanted (`native` None: wherever built; False: never; True: must be)."""
    lib = rules_native.library() if native is not False else None
    if native and lib is None:
        raise FileNotFoundError(f"{rules_native.library_path()} is not built: run scripts/build_kenlm.sh")
    return lib


@dataclass
class RepetitionStats:
    """Per document: its characters, non-blank paragraphs and lines with their duplicates (count and
    characters), and per n the top n-gram's and the repeated n-grams' characters (see `ngram_stats`)."""

    n_chars: np.ndarray
    paragraphs: np.ndarray
    dup_paragraphs: np.ndarray
    dup_paragraph_chars: np.ndarray
    lines: np.ndarray
    dup_lines: np.ndarray
    dup_line_chars: np.ndarray
    top_chars: dict[int, np.ndarray]
    duplicate_chars: dict[int, np.ndarray]


def repetition_stats(text: pa.Array, cjk: np.ndarray, sizes: list[int], cjk_scale: int,
                     native: bool | None = None, copies: np.ndarray | None = None) -> RepetitionStats:
    """Gopher's repetition measures of every document, for the n-grams of `sizes` (n times `cjk_scale`
    in CJK documents, whose words are characters). Compiled where the library is built (`native` None:
    wherever it is; False: numpy), with the same numbers either way. `copies` (per document; None: 1 each,
    the paper): how many copies of a paragraph, line or n-gram are not repetition; the kernel counts from
    the second copy, so documents are measured in numpy when any allows more."""
    if copies is not None and (copies == 1).all():
        copies = None
    lib = native_library(native) if copies is None else None
    if lib is not None:
        spans, top, dup = rules_native.repetition(lib, text, cjk, unicode_flags(), list(sizes), cjk_scale, top_mode=1)
        return RepetitionStats(*spans.T, {n: top[:, k] for k, n in enumerate(sizes)},
                               {n: dup[:, k] for k, n in enumerate(sizes)})
    n_chars = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = []
    for tokens in (non_blank(paragraphs(text)), non_blank(lines(text))):
        duplicate = duplicate_elements(tokens, copies)
        counts += [tokens.counts, tokens.per_doc_count(duplicate),
                   tokens.per_doc_sum(np.where(duplicate, tokens.lengths(), 0)).astype(np.int64)]
    doc_words = words(text, cjk)
    wanted = (set(sizes) if (~cjk).any() else set()) | ({n * cjk_scale for n in sizes} if cjk.any() else set())
    stats = ngram_stats(doc_words, doc_words.ids(), doc_words.lengths(), sorted(wanted),
                        joiner=(~cjk).astype(np.int64), copies=copies)
    zeros = np.zeros(len(cjk))

    def pick(n: int, field: str) -> np.ndarray:
        plain = getattr(stats[n], field) if n in stats else zeros
        scaled = getattr(stats[n * cjk_scale], field) if n * cjk_scale in stats else zeros
        return np.where(cjk, scaled, plain).astype(np.int64)

    return RepetitionStats(n_chars, *counts, {n: pick(n, "top_chars") for n in sizes},
                           {n: pick(n, "duplicate_chars") for n in sizes})


# --- gopher_quality's and fineweb's counts, compiled or in numpy ------------------------------------

BULLETS = ("●", "•", "*", "-", "–", "‣", "◦", "▪", "·")
SYMBOLS = ("#",) + ELLIPSIS


@dataclass
class QualityCounts:
    """Per document, for gopher_quality: whitespace words (CJK characters in CJK documents), their
    characters, symbols (# and ellipses), non-empty lines, lines starting with a bullet and ending with an
    ellipsis (trimmed), words holding a letter, stop words (of `stop_words_cjk` in CJK documents)."""

    words: np.ndarray
    word_chars: np.ndarray
    symbols: np.ndarray
    lines: np.ndarray
    bullet_lines: np.ndarray
    ellipsis_lines: np.ndarray
    alpha_words: np.ndarray
    stop_words: np.ndarray


def quality_counts(text: pa.Array, cjk: np.ndarray, stop_words: tuple[str, ...], stop_words_cjk: tuple[str, ...],
                   native: bool | None = None) -> QualityCounts:
    """gopher_quality's counts of every document; compiled where built (`native` as in `repetition_stats`),
    with the same numbers either way. Null texts go the numpy way (the kernel reads them as "")."""
    lib = native_library(native)
    if lib is not None and text.null_count == 0:
        counts = rules_native.quality(lib, text, cjk, unicode_classes(), stop_words, stop_words_cjk, BULLETS,
                                      ELLIPSIS, SYMBOLS)
        return QualityCounts(*counts.T)
    doc_words = words(text, cjk)
    symbols = sum(pc.count_substring(text, s).to_numpy() for s in SYMBOLS).astype(np.int64)
    doc_lines = lines(text)
    stripped = pc.utf8_trim_whitespace(doc_lines.values)
    non_empty = pc.greater(pc.utf8_length(stripped), 0).to_numpy(zero_copy_only=False)
    has_letter = to_numpy_bool(pc.match_substring_regex(doc_words.values, r"\pL"))
    stop_en = to_numpy_bool(pc.is_in(doc_words.values, value_set=pa.array(list(stop_words), pa.string())))
    stop_cjk = to_numpy_bool(pc.is_in(doc_words.values, value_set=pa.array(list(stop_words_cjk), pa.string())))
    return QualityCounts(doc_words.counts, doc_words.per_doc_sum(doc_words.lengths()).astype(np.int64), symbols,
                         doc_lines.per_doc_count(non_empty),
                         doc_lines.per_doc_count(starts_with_any(stripped, BULLETS)),
                         doc_lines.per_doc_count(ends_with_any(stripped, ELLIPSIS)),
                         doc_words.per_doc_count(has_letter),
                         np.where(cjk, doc_words.per_doc_count(stop_cjk), doc_words.per_doc_count(stop_en)))


@dataclass
class FineWebCounts:
    """Per document, for fineweb: newlines, characters, non-blank lines, those ending in terminal
    punctuation, short ones, characters of duplicated non-blank lines (first copies not counted), words
    (Treebank-like, or characters in CJK documents)."""

    newlines: np.ndarray
    chars: np.ndarray
    lines: np.ndarray
    punct_lines: np.ndarray
    short_lines: np.ndarray
    dup_chars: np.ndarray
    words: np.ndarray


def fineweb_counts(text: pa.Array, cjk: np.ndarray, terminal_punctuation: tuple[str, ...], short_line_length: int,
                   short_line_length_cjk: int, native: bool | None = None,
                   copies: np.ndarray | None = None) -> FineWebCounts:
    """fineweb's counts of every document; compiled where built, with the same numbers either way. `copies`
    (per document; None: 1 each, the reference): how many copies of a line are not duplicates; the kernel
    counts from the second copy, so the duplicate characters of documents allowed more are counted again
    in numpy (those documents only: the rest of the batch keeps the kernel's numbers)."""
    lib = native_library(native)
    if lib is not None and text.null_count == 0:
        counts = FineWebCounts(*rules_native.fineweb(lib, text, cjk, unicode_classes(), terminal_punctuation,
                                                     short_line_length, short_line_length_cjk).T)
        more = np.flatnonzero(copies != 1) if copies is not None else np.zeros(0, np.int64)
        if len(more):
            counts.dup_chars = counts.dup_chars.copy()
            counts.dup_chars[more] = duplicate_line_chars(pc.take(text, pa.array(more)), copies[more])
        return counts
    newlines = pc.count_substring(text, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
    chars = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
    doc_lines = non_blank(lines(text))
    lengths = doc_lines.lengths()
    short_limit = np.where(cjk, short_line_length_cjk, short_line_length)[doc_lines.parent]
    return FineWebCounts(newlines, chars, doc_lines.counts,
                         doc_lines.per_doc_count(ends_with_any(doc_lines.values, terminal_punctuation)),
                         doc_lines.per_doc_count(lengths <= short_limit),
                         duplicate_line_chars(text, copies, doc_lines),
                         np.where(cjk, words(text, cjk).counts, treebank_word_counts(text)))


def duplicate_line_chars(text: pa.Array, copies: np.ndarray | None = None, doc_lines: Tokens | None = None) -> np.ndarray:
    """Per document: the characters of its non-blank lines equal to an earlier line of it (FineWeb's
    duplicate-line characters), counted from a line's copies[doc] + 1-th occurrence (None: the second).
    `doc_lines`: the text's non-blank lines where the caller has them already."""
    doc_lines = non_blank(lines(text)) if doc_lines is None else doc_lines
    duplicate = duplicate_elements(doc_lines, copies)
    return doc_lines.per_doc_sum(np.where(duplicate, doc_lines.lengths(), 0)).astype(np.int64)


# --- technical lines ------------------------------------------------------------------------------

# A line of technical text that is not a sentence: it ends without terminal punctuation and is an API
# signature or declaration ("public String getProvider ()", "assignButton(slot, button)",
# "getSafeAreaHeight() returns number", "static <E extends Enum<E>> EnumSet<E>"), a command synopsis
# ("git log [--oneline] <path>", "ls -la") or prompt ("$ pip install -e ."), or a code line (one that opens
# or closes a block, ends a statement or assigns). Documentation repeats these by design (a summary, then
# the details), and they hold few alphabetic words; the Gopher measures were made for lines of prose.
_DECLARATION = r"(public|private|protected|static|final|abstract|interface|def|function|func|fn|const|#include|typedef)\s"
# a name and its parameters: "name(a, b)", or "name ()" with a space only when empty (Javadoc); not a
# heading's "(and more)"
_SIGNATURE = r"([\w>\]]\([^()]*\)|\w\s\(\))(\s*(returns?|throws)\b[^.!?]*)?"
_GENERIC = r"\w<[\w<>,.?\s]*>"  # a generic type: List<String>, Enum<E>
_COMMAND = r"(^|\s)(-[A-Za-z]+|--[A-Za-z][\w-]*)(=\S+)?(\s|$)|\[(-|OPTION|options)[^\]]*\]|<[\w-]+>\s*$"
_CODE = r"^[{}]|[{}]$|[;{}]$|^\s*[\w.\[\]]+\s*[-+*/]?=\s*\S"
_PROMPT = r"^\s*(\$|>>>)\s"
API_LINE = rf"^\s*{_DECLARATION}|{_SIGNATURE}\s*[;:{{]?\s*$|{_GENERIC}"
TECHNICAL_LINE = rf"{API_LINE}|{_COMMAND}|{_CODE}"
# A reference page (an API reference, a Javadoc class page, a question about an API) holds at least this
# many API_LINE lines. On the tuning half of bench/bench_filter_chain.py no page of WikiText, GUM, UD EWT or
# CCNet holds 2, 4 of the 19 technical pages hold 3 or more (4 to 41), and so do 38 of the 40 code junk
# documents and 5 of 116 web boilerplate documents (film credits "Producer(s)", a pasted program).
REFERENCE_PAGE_LINES = 3


def technical_lines(values: pa.Array) -> np.ndarray:
    """Per line: True for a line of technical text that is not a sentence (see TECHNICAL_LINE); a prompt
    line ("$ pip install -e .") is technical however it ends."""
    hit = to_numpy_bool(pc.match_substring_regex(values, TECHNICAL_LINE))
    sentence = ends_with_any(pc.utf8_rtrim_whitespace(values), (".", "!", "?"))
    return hit & ~sentence | to_numpy_bool(pc.match_substring_regex(values, _PROMPT))


def reference_pages(text: pa.Array) -> np.ndarray:
    """Per document: True for a reference page, one with REFERENCE_PAGE_LINES or more API signature or
    declaration lines (API_LINE) that are not sentences."""
    doc_lines = lines(text)
    api = to_numpy_bool(pc.match_substring_regex(doc_lines.values, API_LINE))
    api &= ~ends_with_any(pc.utf8_rtrim_whitespace(doc_lines.values), (".", "!", "?"))
    return doc_lines.per_doc_count(api) >= REFERENCE_PAGE_LINES


def without_technical_lines(text: pa.Array) -> pa.Array:
    """Each document with its technical lines (technical_lines) taken out, its other lines as they were."""
    doc_lines = lines(text)
    keep = ~technical_lines(doc_lines.values)
    offsets = np.concatenate([[0], np.cumsum(doc_lines.per_doc_count(keep))]).astype(np.int32)
    kept = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pc.filter(doc_lines.values, pa.array(keep))), "\n")
    return pc.if_else(pc.is_null(text), text, kept)


# --- wiring rules to a batch ---------------------------------------------------------------------


def rows_to_check(batch: pa.RecordBatch, languages: tuple[str, ...] | None) -> np.ndarray:
    """Indices of the live rows a rule stage looks at (those in `languages`, when given)."""
    mask = to_numpy_bool(live_mask(batch))
    if languages is not None and "lang" in batch.schema.names:
        langs = batch.column("lang")
        if pa.types.is_null(langs.type):  # a `lang` null all through: no row is in `languages`
            langs = langs.cast(pa.string())
        mask &= to_numpy_bool(pc.is_in(langs, value_set=pa.array(list(languages), pa.string())))
    return np.flatnonzero(mask)


@dataclass
class Selected:
    """The rows a rule stage checks, with their text and whether each is CJK."""

    rows: np.ndarray
    text: pa.Array
    cjk: np.ndarray


def select_rows(batch: pa.RecordBatch, languages: tuple[str, ...] | None,
                cjk_languages: tuple[str, ...]) -> Selected | None:
    """The live rows in `languages` (None when there are none), their text and CJK flags."""
    rows = rows_to_check(batch, languages)
    if len(rows) == 0:
        return None
    take = pa.array(rows)
    langs = pc.take(batch.column("lang"), take) if "lang" in batch.schema.names else None
    return Selected(rows, pc.take(batch.column(TEXT), take), cjk_mask(langs, len(rows), cjk_languages))


def first_reason(checks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per row, the name of the first failing check, or None."""
    reasons = np.full(n, None, dtype=object)
    for name, failed in checks:
        reasons[(reasons == None) & failed] = name  # noqa: E711  (element-wise on an object array)
    return reasons


def apply_reasons(batch: pa.RecordBatch, rows: np.ndarray, reasons: np.ndarray) -> pa.RecordBatch:
    full = np.full(batch.num_rows, None, dtype=object)
    full[rows] = reasons
    array = pa.array(full.tolist(), pa.string())
    return drop_rows(batch, pc.is_valid(array), array)

