"""`c4`: the C4 rules (Raffel et al. 2020, section 2.2, and the reference `c4_utils.py`).

Line rules remove lines and rewrite `text`: a word over `max_word_length` characters, no terminal
punctuation (or ending in an ellipsis), fewer than `min_words_per_line` words, "javascript", cookie and
terms-of-use phrases (and `extra_policy_phrases`, our extension); Wikipedia citation marks are cut out.
Document rules drop: "lorem ipsum", a curly bracket, fewer than `min_sentences` sentences in the kept lines. CJK lines count characters as words
and end with CJK sentence punctuation. Our extensions, each off by default, are documented in Config.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages import text_rules_native as rules_native
from curation.stage import TEXT, register_stage, set_column
from curation.stages import text_rules as tr
from curation.stages.rule_stage import RuleStage

LOREM_IPSUM, JAVASCRIPT = "lorem ipsum", "javascript"
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
CJK_TRAILING_FRAGMENT = r"([。！？][”」』）]*)[^。！？]+$"
# A Latin line's unterminated tail after its last sentence end (. ! or ? after two letters or a non-letter,
# so not an initial as in "John H. McDonald"; then closing quotes or brackets and white space): a signature,
# a URL, a source line or a last sentence left without its full stop. The tail may hold . ! ? not followed
# by white space ("news.asp?id=1", "dailyem...@bbc.co.uk") but no sentence end.
LATIN_TRAILING_FRAGMENT = r"((?:\pL\pL|[^\pL\s])[.!?]+['\"”’)\]]*)\s(?:[^.!?]|[.!?]+[^.!?\s])*$"
LINE_REASONS = ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")  # tr_c4's codes 1-5
DOC_REASONS = ("c4:lorem_ipsum", "c4:curly_bracket", "c4:min_sentences")  # tr_c4's codes 1-3
CURLY_SCOPES = ("page", "kept_lines", "code_lines", "code_pages")
# A line that looks like code: it starts or ends with a curly bracket, or holds one and ends with `;` or `,`
# (a block opened or closed, a statement or initialiser), as C, Java, JavaScript, CSS and JSON lines do
# and a sentence that mentions `{name}` or `{"1", "2"}` in passing does not.
CODE_LINE = r"^[{}]|[{}]$|[{}].*[;,]$"
# A page of prose with code blocks (curly_bracket_scope: code_pages) holds at least this share of its words
# in prose lines (see prose_with_code_blocks): a share, not a majority, since reference pages and how-tos hold
# headings, signatures, file trees and menus besides their prose (33-99% of the words of the tuning half's
# technical pages are in prose lines).
PROSE_SHARE = 0.3


@register_stage("c4")
class C4(RuleStage):
    """C4 line rules (rewrite text) and document rules (lorem ipsum, curly bracket, too few sentences)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(RuleStage.Config):
        remove_citations: bool = True
        filter_no_terminal_punct: bool = True
        min_words_per_line: int | None = 3
        max_word_length: int | None = 1000
        filter_javascript: bool = True
        filter_policy: bool = True
        # Our extension (empty: the paper): more phrases that remove a line, as C4's policy phrases do, e.g.
        # ["©", "all rights reserved"]. With min_sentences_words a page made of a few long copyright notices
        # keeps enough words to pass (1 of 19 legal banners on the tuning half of bench/bench_filter_chain.py);
        # neither phrase is in a line of WikiText, GUM or UD EWT, while "copyright" alone is (a court case).
        extra_policy_phrases: tuple[str, ...] = ()
        filter_lorem_ipsum: bool = True
        filter_curly_bracket: bool = True
        # "page" (the paper), "kept_lines" (the reference code) or "code_lines": only lines that look like
        # code (CODE_LINE) count, so technical prose that names `{placeholder}` or `{"1", "2"}` in a sentence
        # stays while a page holding a code block still goes (bench/results/filter_chain.json). "code_pages"
        # (our extension): as code_lines, but a page of prose with code blocks (`prose_with_code_blocks`: most
        # of its words in prose lines, and prose after its last code line) stays; the line rules remove the
        # block's unpunctuated lines as they remove any such line.
        curly_bracket_scope: str = "page"
        min_sentences: int | None = 5
        # None (the paper): fewer than `min_sentences` sentences drops the page. A number: a page whose kept
        # lines (those ending in terminal punctuation, of 3 words or more) hold at least this many words
        # passes however few sentences they make. The paper's rule is there to drop pages left with little
        # real text, and counts sentences with punkt; short informal documents (UD EWT answers, newsgroup
        # posts and reviews, CCNet-kept pages) write long run-on sentences and lost 40-80% of their documents
        # of 50+ words to it on the tuning half of bench/bench_filter_chain.py.
        min_sentences_words: int | None = None
        # False (the paper): a line that does not end in terminal punctuation goes, however many sentences
        # it holds. True: a line holding a sentence end loses only its unterminated tail (what follows its
        # last sentence end), as CJK lines always do here: informal posts write a paragraph as one line and
        # end it with a URL, a signature or a sentence left without its full stop.
        trim_unterminated_tail: bool = False
        # CJK sentences are long (about 48 characters in the MSRA news here): fewer make a page.
        min_sentences_cjk: int | None = 3
        terminal_punctuation: tuple[str, ...] = tr.TERMINAL_PUNCTUATION

        def __post_init__(self) -> None:
            object.__setattr__(self, "extra_policy_phrases", tuple(p.lower() for p in self.extra_policy_phrases))
            if self.curly_bracket_scope not in CURLY_SCOPES:
                raise ValueError(f"curly_bracket_scope must be one of {', '.join(CURLY_SCOPES)}, "
                                 f"not {self.curly_bracket_scope!r}")

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        rows, text = selected.rows, selected.text
        result = line_rules(text, selected.cjk, self.config)
        stays = result.doc_reason == None  # noqa: E711
        old_bytes = pc.binary_length(text).to_numpy(zero_copy_only=False)
        new_bytes = pc.binary_length(result.text).to_numpy(zero_copy_only=False)
        self.metrics["bytes_removed"] += int((old_bytes - new_bytes)[stays].sum())
        for reason, count in result.lines_removed.items():
            self.metrics[f"lines_removed:{reason}"] += count
        new_text, doc_reason = result.text, result.doc_reason

        full_text = batch.column(TEXT)
        index = np.full(batch.num_rows, -1, dtype=np.int64)
        index[rows] = np.arange(len(rows))
        gathered = pc.take(new_text, pa.array(np.maximum(index, 0)))
        batch = set_column(batch, TEXT, pc.if_else(pa.array(index >= 0), gathered, full_text))
        return tr.apply_reasons(batch, rows, doc_reason)


@dataclasses.dataclass
class LineRules:
    """c4's outcome for a batch of documents: the new text (kept lines where the document stays, the old
    text where it goes), the document reasons (None: stays), lines removed per reason in staying documents."""

    text: pa.Array
    doc_reason: np.ndarray
    lines_removed: dict[str, int]


def line_rules(text: pa.Array, cjk: np.ndarray, c: C4.Config, native: bool | None = None) -> LineRules:
    """The line and document rules of every document; compiled where built (tr_c4 in text_rules.cc, one
    pass and no intermediate arrays), in Arrow and numpy otherwise, with the same results."""
    lib = tr.native_library(native)
    policy = POLICY_PHRASES + c.extra_policy_phrases if c.filter_policy else ()
    ascii_ = all(p.isascii() for p in (LOREM_IPSUM, JAVASCRIPT) + policy + tr.TITLES + tr.ABBREVIATIONS)
    # The kernel implements the paper's and the reference's rules; code_lines, code_pages and
    # min_sentences_words run in numpy (TODO: in tr_c4, for speed).
    if lib is not None and text.null_count == 0 and ascii_ and c.curly_bracket_scope in ("page", "kept_lines") \
            and c.min_sentences_words is None and not c.trim_unterminated_tail:
        def flag(value) -> int:
            return -1 if value is None else int(value)

        min_cjk = c.min_sentences_cjk if c.min_sentences_cjk is not None else c.min_sentences
        options = [flag(c.remove_citations), flag(c.filter_no_terminal_punct), flag(c.min_words_per_line),
                   flag(c.max_word_length), flag(c.filter_javascript), flag(c.filter_lorem_ipsum),
                   flag(c.filter_curly_bracket), flag(c.curly_bracket_scope == "kept_lines"), flag(c.min_sentences),
                   flag(min_cjk)]
        lines, codes, new_text = rules_native.c4(
            lib, text, cjk, tr.unicode_classes(), tr.lower_ascii(), c.terminal_punctuation,
            policy, tr.TITLES, tr.ABBREVIATIONS, (LOREM_IPSUM, JAVASCRIPT, "...", "{"),
            options)
        doc_reason = np.array((None,) + DOC_REASONS, dtype=object)[codes]
        removed = lines[doc_reason == None].sum(axis=0)  # noqa: E711
        return LineRules(new_text.cast(text.type), doc_reason,
                         {reason: int(n) for reason, n in sorted(zip(LINE_REASONS, removed[1:])) if n})
    return _line_rules_numpy(text, cjk, c)


def _line_rules_numpy(text: pa.Array, cjk: np.ndarray, c: C4.Config) -> LineRules:
    rows = np.arange(len(text))
    doc_lines = tr.lines(text)
    line = pc.utf8_trim_whitespace(doc_lines.values)
    line_cjk = cjk[doc_lines.parent]
    line_words = tr.words(line, line_cjk)  # parent = line index
    n_words = line_words.counts
    n_lines = len(line)
    removed = np.full(n_lines, None, dtype=object)

    def remove(reason: str, mask: np.ndarray) -> None:
        removed[(removed == None) & mask] = reason  # noqa: E711

    if c.max_word_length is not None and len(line_words.values):
        longest = np.zeros(n_lines, dtype=np.int64)
        np.maximum.at(longest, line_words.parent, line_words.lengths())
        remove("too_long_word", longest > c.max_word_length)
    if c.remove_citations:
        line = pc.replace_substring_regex(line, CITATION, "")
    whole = line
    if c.filter_no_terminal_punct and c.trim_unterminated_tail and (~line_cjk).any():
        trimmed = pc.replace_substring_regex(line, LATIN_TRAILING_FRAGMENT, r"\1")
        line = pc.if_else(pa.array(line_cjk), line, trimmed)
        n_words = np.where(line_cjk, n_words, tr.words(line, line_cjk).counts)  # the trimmed lines' words
    if c.filter_no_terminal_punct and line_cjk.any():
        # A CJK line is often a whole paragraph of sentences: cut its unterminated tail (a fragment)
        # instead of losing the paragraph; a line with no sentence end at all still goes.
        trimmed = pc.replace_substring_regex(line, CJK_TRAILING_FRAGMENT, r"\1")
        line = pc.if_else(pa.array(line_cjk), trimmed, line)
    if c.filter_no_terminal_punct:
        remove("no_terminal_punct", ~tr.ends_with_any(line, c.terminal_punctuation) | tr.ends_with_any(line, ("...",)))
    if c.min_words_per_line is not None:
        remove("too_few_words", n_words < c.min_words_per_line)
    # The phrase rules (lorem ipsum, javascript, policy) read a Latin line whole, as C4 does: a trimmed tail
    # ("... Read our Privacy Policy") does not rescue a line C4 removes for its phrase.
    lower = pc.utf8_lower(pc.if_else(pa.array(line_cjk), line, whole))
    alive = removed == None  # noqa: E711
    doc_reason = np.full(len(rows), None, dtype=object)
    if c.filter_lorem_ipsum:
        hit = alive & tr.to_numpy_bool(pc.match_substring(lower, LOREM_IPSUM))
        doc_reason[np.unique(doc_lines.parent[hit])] = DOC_REASONS[0]
    if c.filter_javascript:
        remove("javascript", tr.to_numpy_bool(pc.match_substring(lower, JAVASCRIPT)))
    if c.filter_curly_bracket:
        # The paper: "We removed any pages that contained a curly bracket" - anywhere on the page.
        # The reference code looks only at lines that survived the line rules (curly_bracket_scope:
        # kept_lines), which lets code through: its brace lines end without punctuation.
        hit = tr.to_numpy_bool(pc.match_substring(line, "{"))
        if c.curly_bracket_scope == "kept_lines":
            hit &= removed == None  # noqa: E711
        elif c.curly_bracket_scope in ("code_lines", "code_pages"):
            hit = tr.to_numpy_bool(pc.match_substring_regex(line, CODE_LINE))
        if c.curly_bracket_scope != "code_pages":  # code_pages decides once the line rules have run (below)
            curly_docs = np.unique(doc_lines.parent[hit])
            doc_reason[curly_docs[doc_reason[curly_docs] == None]] = DOC_REASONS[1]  # noqa: E711
    if c.filter_policy:
        policy = np.zeros(n_lines, dtype=bool)
        for phrase in POLICY_PHRASES + c.extra_policy_phrases:
            policy |= tr.to_numpy_bool(pc.match_substring(lower, phrase))
        remove("policy", policy)

    keep = removed == None  # noqa: E711
    if c.filter_curly_bracket and c.curly_bracket_scope == "code_pages":
        prose = keep & ~tr.to_numpy_bool(pc.match_substring_regex(line, "[{}]")) & ~tr.technical_lines(line) \
            & ~tr.to_numpy_bool(pc.match_substring_regex(doc_lines.values, r"^\s"))
        code = doc_lines.per_doc_count(hit) > 0
        code &= ~prose_with_code_blocks(doc_lines, hit, prose, n_words, line_words.counts)
        doc_reason[code & (doc_reason == None)] = DOC_REASONS[1]  # noqa: E711
    # The reference counts sentences with punkt, which knows abbreviations and initials; so do these
    # rules (text_rules.sentence_counts), where a plain "period then space" counted "H. M." as two.
    sentences = tr.sentence_counts(line)
    doc_sentences = doc_lines.per_doc_sum(np.where(keep, sentences, 0))
    if c.min_sentences is not None:
        needed = np.where(cjk, c.min_sentences_cjk if c.min_sentences_cjk is not None else c.min_sentences,
                          c.min_sentences)
        few = (doc_reason == None) & (doc_sentences < needed)  # noqa: E711
        if c.min_sentences_words is not None:
            few &= doc_lines.per_doc_sum(np.where(keep, n_words, 0)) < c.min_sentences_words
        doc_reason[few] = DOC_REASONS[2]

    # Rewrite the text of the documents that stay; dropped ones keep their text for auditing.
    kept_counts = doc_lines.per_doc_count(keep)
    offsets = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int32)
    rebuilt = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pc.filter(line, pa.array(keep))), "\n")
    stays = doc_reason == None  # noqa: E711
    new_text = pc.if_else(pa.array(stays), rebuilt, text)
    stays_lines = stays[doc_lines.parent]
    lines_removed = {str(reason): int(count)
                     for reason, count in zip(*np.unique(removed[stays_lines & ~keep].astype(str), return_counts=True))}
    return LineRules(new_text, doc_reason, lines_removed)


def prose_with_code_blocks(doc_lines: tr.Tokens, code: np.ndarray, prose: np.ndarray, prose_words: np.ndarray,
                           words: np.ndarray) -> np.ndarray:
    """Per document: True for a page of prose with code blocks (a how-to or a question that shows code), not
    a page of code. Per line: `code` (CODE_LINE), `prose` (kept by the line rules, at the margin, with no
    curly bracket and no technical line: text_rules.technical_lines), the words the line rules leave it
    (`prose_words`) and its `words`. Such a page holds at least PROSE_SHARE of its words in prose lines,
    and prose after its last code line: the page goes on after its code. A source file fails one or the
    other: the prose of its comments and docstrings is indented or held by code (HumanEval-X, Linux), and
    where it is not (a C header comment), the code follows it to the end. Designed on the tuning half of
    bench/bench_filter_chain.py: none of its 788 programs and Linux chunks with a code line has prose after
    it (their prose lines hold 0-51% of their words, the technical pages' 33-99%); a Russian article on C with
    seven listings, each followed by its caption and prose, passes, and so do 15 of its 19 technical pages
    with a 15-line block of code pasted in (the bench's `code_block:` kind; 2 under code_lines)."""
    n = doc_lines.n_docs
    index = np.arange(len(code))
    last_code = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_code, doc_lines.parent[code], index[code])
    after = doc_lines.per_doc_count(prose & (index > last_code[doc_lines.parent])) > 0
    share = tr.safe_ratio(doc_lines.per_doc_sum(np.where(prose, prose_words, 0)), doc_lines.per_doc_sum(words))
    return after & (share >= PROSE_SHARE)
