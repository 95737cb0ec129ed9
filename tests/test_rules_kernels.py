"""The compiled document-rule kernels (tr_quality, tr_fineweb, tr_c4 in stages/text_rules.cc)
against the numpy path they replace: the same counts, reasons and rewritten text on real shared text,
on strings at the edges of the Unicode classes, and under non-default c4 options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl
from curation.stages import text_rules_native as rules_native
from curation.stage import build_stage
from curation.stages import c4
from curation.stages import text_rules as tr

pytestmark = pytest.mark.skipif(rules_native.library() is None,
                                reason="the compiled rule kernels are not built (scripts/build_kenlm.sh)")

FILES = ["web_commoncrawl_samples.jsonl.gz", "zh_msra_news.jsonl.gz", "en_wikitext2_valid_test.jsonl.gz",
         "code_humanevalx_linux.jsonl.gz", "lid_lingua_75lang.jsonl.gz"]
# Each where a class boundary lies: Unicode spaces (\u3000, \u2003, \xa0, \v, \x1c) that split words but
# are not RE2's \s; the Kelvin sign and dotted I, which lower-case to ASCII; Arabic-Indic digits, not
# RE2's \d; CJK sentence ends with closers only after them; openers before lower case; ellipses, bullets.
EDGES = [
    "", "\n", " \n\t\n ", "a", "的", "\n" * 5, "\x00\x01 x\x00",
    "\u3000x\u2003y\n\n x\xa0z\vq\x1cw.",
    "JAVA\u212aSCRIPT is off. \u0130t is javascr\u0130pt? Lorem \u0130psum dolor sit amet.",
    "Cited [1] twice[23]. [edit] Not [١] this [x]. [citation needed] And [] this one [[2]].",
    "他说。」\n他说。」」\n好的！”继续\n没有句号\n结束。）",
    'He met Dr. Smith and ("mr. jones") at 5 p.m. on Feb. 13 with H. M. Stanley... and U.S. officials. Etc. Done.',
    "• one item\n- two ...\n* three…\n‣ four.\n\u2003• five",
    "don't stop 1,000 e-mail U.S ... -- ’tis 'quoted' a/b c.d, ._ __init__ ¿qué? «ok»",
    "### heading ... …\n## again......",
    "the the the be to of and that have with THE AND",
    "short\nshort\nshort\n   short  \nlonger line that ends properly.\nlonger line that ends properly.",
]


def texts(name: str, n: int = 2000) -> tuple[pa.Array, np.ndarray]:
    rows = read_jsonl(name)[:n]
    text = pa.array([r["text"] or "" for r in rows] + EDGES + EDGES)
    cjk = np.array([r.get("lang") in tr.CJK_LANGUAGES for r in rows] + [False] * len(EDGES) + [True] * len(EDGES))
    return text, cjk


def assert_same_counts(compiled, numpy_) -> None:
    for field in dataclasses.fields(compiled):
        a, b = getattr(compiled, field.name), getattr(numpy_, field.name)
        assert np.array_equal(a, b), (field.name, np.flatnonzero(a != b)[:5])


@pytest.mark.parametrize("name", FILES)
def test_quality_counts_agree(name):
    text, cjk = texts(name)
    stop = build_stage({"name": "gopher_quality"}).config
    compiled, numpy_ = (tr.quality_counts(text, cjk, stop.stop_words, stop.stop_words_cjk, native=flag)
                        for flag in (True, False))
    assert_same_counts(compiled, numpy_)
    assert compiled.stop_words.sum() > 0 and compiled.bullet_lines.sum() > 0 and compiled.ellipsis_lines.sum() > 0


@pytest.mark.parametrize("name", FILES)
def test_fineweb_counts_agree(name):
    text, cjk = texts(name)
    compiled, numpy_ = (tr.fineweb_counts(text, cjk, tr.TERMINAL_PUNCTUATION, 30, 10, native=flag)
                        for flag in (True, False))
    assert_same_counts(compiled, numpy_)
    assert compiled.dup_chars.sum() > 0 and compiled.short_lines.sum() > 0


C4_OPTIONS = [
    {},
    {"curly_bracket_scope": "kept_lines", "min_sentences_cjk": None},
    {"remove_citations": False, "filter_no_terminal_punct": False, "min_words_per_line": None, "max_word_length": None},
    {"filter_javascript": False, "filter_policy": False, "filter_lorem_ipsum": False, "filter_curly_bracket": False,
     "min_sentences": None},
    {"max_word_length": 12, "min_words_per_line": 6, "min_sentences": 2, "terminal_punctuation": (".", "。")},
]


@pytest.mark.parametrize("options", C4_OPTIONS)
@pytest.mark.parametrize("name", FILES)
def test_c4_line_rules_agree(name, options):
    text, cjk = texts(name, 1000)
    config = build_stage({"name": "c4", **options}).config
    compiled, numpy_ = (c4.line_rules(text, cjk, config, native=flag) for flag in (True, False))
    assert compiled.doc_reason.tolist() == numpy_.doc_reason.tolist()
    assert compiled.text.type == numpy_.text.type
    assert compiled.text.to_pylist() == numpy_.text.to_pylist()
    assert compiled.lines_removed == numpy_.lines_removed


def test_c4_kernel_cuts_what_the_expressions_cut():
    """The edge strings come out as the regular expressions cut them: \\[\\d*\\] takes "[]" and not
    Arabic-Indic digits (RE2's \\d is ASCII), a CJK tail keeps all closers after the last sentence end but
    the last code point, and the Kelvin sign lower-cases to the k of a policy phrase."""
    config = build_stage({"name": "c4", "min_words_per_line": 1, "min_sentences": 1, "min_sentences_cjk": 1}).config
    text = pa.array([EDGES[9], EDGES[10], "This site uses COO\u212aIES.\nA sentence stays here."])
    for native in (True, False):
        out = c4.line_rules(text, np.array([False, True, False]), config, native=native)
        assert out.text.to_pylist() == ["Cited  twice.  Not [١] this [x].  And  this one [].",
                                        "他说。\n他说。」\n好的！”\n结束。", "A sentence stays here."]
        assert out.doc_reason.tolist() == [None, None, None]
        assert out.lines_removed == {"no_terminal_punct": 1, "policy": 1}


def test_sentence_rules_match_on_lines_with_abbreviations():
    """sentence_counts has no compiled twin of its own: c4's kept-line sentences decide min_sentences, so
    a line whose count differs moves a document; lines with titles, initials and dotted abbreviations."""
    line = EDGES[11]  # three: "officials." "Etc." (a capital follows) "Done."; not "Dr." "p.m." "Feb." "H." "Stanley..."
    config = build_stage({"name": "c4", "min_sentences": 3}).config
    both = [c4.line_rules(pa.array([line]), np.array([False]), config, native=flag).doc_reason.tolist()
            for flag in (True, False)]
    assert tr.sentence_counts(pa.array([line])).tolist() == [3]
    assert both == [[None], [None]]
    config = build_stage({"name": "c4", "min_sentences": 4}).config
    assert c4.line_rules(pa.array([line]), np.array([False]), config, native=True).doc_reason.tolist() == \
        ["c4:min_sentences"]
