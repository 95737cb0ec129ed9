"""The rule options that let technical and short informal prose through (issue 24 item 9), each on a real
document of ../shared/data, with the paper's behaviour still the default (bench/bench_filter_chain.py
measures them on a held-out half)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl
from curation.stage import DROP_REASON, build_stage
from curation.stages.c4 import C4, line_rules
from curation.stages import text_rules as tr
from junk import junk_documents


def by_id(name: str, doc_id: str) -> str:
    return next(r["text"] for r in read_jsonl(name) if r["id"] == doc_id)


def c4_reasons(texts: list[str], **options) -> list[str | None]:
    stage = build_stage({"name": "c4", **options})
    stage.setup()
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                        DROP_REASON: pa.nulls(len(texts), pa.string())})
    return stage(batch).column(DROP_REASON).to_pylist()


# A Wikidot help page that names form variables inline ("I would use %%form_data{author}%%."), and a
# programming blog post with LaTeX and `{"1", "2", "3"}` in its sentences: technical prose, no code block.
HELP_PAGE, BLOG_POST = "dolma-cc2019-0159", "dolma-cc2019-0271"


def test_code_lines_scope_keeps_prose_that_mentions_braces():
    web = "web_commoncrawl_samples.jsonl.gz"
    texts = [by_id(web, HELP_PAGE), by_id(web, BLOG_POST)]
    assert c4_reasons(texts) == ["c4:curly_bracket"] * 2  # the paper: a curly bracket anywhere
    assert c4_reasons(texts, curly_bracket_scope="code_lines") == [None, None]


def test_code_lines_scope_still_drops_pages_with_code():
    code = [r["text"] for r in read_jsonl("code_humanevalx_linux.jsonl.gz") if r["lang"] in ("c", "java", "js")
            and "{" in r["text"]][:30]
    reasons = c4_reasons(code, curly_bracket_scope="code_lines")
    assert reasons.count("c4:curly_bracket") == len(code)
    # ...and with the page's prose kept: a help page with a code block pasted in goes
    page = by_id("web_commoncrawl_samples.jsonl.gz", HELP_PAGE) + "\n" + code[0]
    assert c4_reasons([page], curly_bracket_scope="code_lines") == ["c4:curly_bracket"]


def test_code_line_expression():
    import re

    from curation.stages.c4 import CODE_LINE

    for line in ("int main() {", "}", "return x; }", "x = {1, 2};", '"a": {', ".a { color: red; }"):
        assert re.search(CODE_LINE, line), line
    for line in ("I would use %%form_data{author}%%. To use the content field.",
                 'type e.g. {"1", "2", "3"} and click the {} button.', "foo(bar);"):
        assert not re.search(CODE_LINE, line), line


# A newsgroup post of 57 words in three long sentences (UD EWT): real, if informal, text.
NEWSGROUP_POST = "ewt-newsgroup-groups.google.com_alt.animals.cat_04d718686843b577_ENG_20040713_101600"


def test_min_sentences_words_keeps_short_documents_of_real_sentences():
    post = by_id("en_ud_ewt_web_docs.jsonl.gz", NEWSGROUP_POST)
    assert c4_reasons([post]) == ["c4:min_sentences"]
    assert c4_reasons([post], min_sentences_words=30) == [None]


def test_min_sentences_words_still_drops_fragments_and_menus():
    junk = junk_documents(seed=3, per_kind=20)
    texts = junk["fragments"] + junk["menu"]
    reasons = c4_reasons(texts, min_sentences_words=30)
    assert reasons.count("c4:min_sentences") == len(texts)


@pytest.mark.parametrize("options", [{"curly_bracket_scope": "code_lines"}, {"curly_bracket_scope": "code_pages"},
                                     {"min_sentences_words": 30}, {"trim_unterminated_tail": True}])
def test_new_options_run_the_same_with_or_without_the_kernel(options):
    texts = [r["text"] for name in ("en_ud_ewt_web_docs.jsonl.gz", "web_commoncrawl_samples.jsonl.gz")
             for r in read_jsonl(name, limit=300) if r["text"]]
    text = pa.array(texts)
    cjk = tr.cjk_mask(None, len(texts))
    config = C4.Config(**options)
    a, b = line_rules(text, cjk, config, native=None), line_rules(text, cjk, config, native=False)
    assert a.doc_reason.tolist() == b.doc_reason.tolist() and a.text.equals(b.text)


def test_paper_defaults_are_unchanged():
    config = C4.Config()
    assert config.curly_bracket_scope == "page" and config.min_sentences_words is None
    assert not config.trim_unterminated_tail
    with pytest.raises(ValueError, match="curly_bracket_scope"):
        C4.Config(curly_bracket_scope="code")


# A weblog post written as one line that ends in its source URL, and a newsgroup alert whose last paragraph
# ends in an unsubscribe URL (UD EWT): paragraphs of real sentences with an unterminated tail.
WEBLOG_POST = "ewt-weblog-juancole.com_juancole_20030914114200_ENG_20030914_114200"
NEWS_ALERT = "ewt-newsgroup-groups.google.com_n3td3v_a04e0c855b022009_ENG_20051207_035500"


def c4_text(texts: list[str], **options) -> list[str]:
    stage = build_stage({"name": "c4", **options})
    stage.setup()
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                        DROP_REASON: pa.nulls(len(texts), pa.string())})
    return stage(batch).column("text").to_pylist()


def test_trim_unterminated_tail_keeps_the_sentences_of_a_line():
    ewt = "en_ud_ewt_web_docs.jsonl.gz"
    post, alert = by_id(ewt, WEBLOG_POST), by_id(ewt, NEWS_ALERT)
    assert c4_reasons([post, alert], min_sentences_words=30) == ["c4:min_sentences"] * 2  # the paper's line rule
    options = {"min_sentences_words": 30, "trim_unterminated_tail": True}
    assert c4_reasons([post, alert], **options) == [None, None]
    kept_post, kept_alert = c4_text([post, alert], **options)
    assert post.startswith(kept_post) and kept_post.endswith("they refuse to go quietly.")
    assert "http" not in kept_post
    assert kept_alert.endswith("someone forwarded it to you.") and "bbc.co.uk/email" not in kept_alert


def test_trim_unterminated_tail_leaves_initials_and_fragments_alone():
    import pyarrow.compute as pc

    from curation.stages.c4 import LATIN_TRAILING_FRAGMENT

    def trim(line: str) -> str:
        return pc.replace_substring_regex(pa.array([line]), LATIN_TRAILING_FRAGMENT, r"\1")[0].as_py()

    assert trim("Statistics by John H. McDonald") == "Statistics by John H. McDonald"  # no sentence end
    assert trim("It was fine. See http://x.com/a.asp?id=1") == "It was fine."
    assert trim('He said "go." Posted via news.com') == 'He said "go."'
    assert trim("It was fine.") == "It was fine."
    junk = junk_documents(seed=3, per_kind=20)
    texts = junk["fragments"] + junk["menu"]
    assert c4_reasons(texts, min_sentences_words=30, trim_unterminated_tail=True).count("c4:min_sentences") == len(texts)


def test_technical_line_expression():
    lines = ["public String getProvider ()", "assignButton(slot, button)", "getSafeAreaHeight() returns number",
             "static <E extends Enum<E>> EnumSet<E>", "$ pip install -e .", "git log [--oneline] <path>", "ls -la",
             "int main() {", "}", "*hi = r >> 64;", "allOf(Class<E> elementType)"]
    prose = ["Returns the unique string identifier for the provider type.", "This calls foo() once.",
             "The well-known -- dash", "About us", "Hello world (and more)", "Posted by John (admin)", "Price: $ 5",
             "Fax: (713) 646-2600", "Copyright 2019 - All rights reserved", "Room 2 > Lot 5", "Cost -5 dollars"]
    assert tr.technical_lines(pa.array(lines)).all()
    assert not tr.technical_lines(pa.array(prose)).any()


def gopher_reasons(name: str, texts: list[str], **options) -> list[str | None]:
    stage = build_stage({"name": name, **options})
    stage.setup()
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                        DROP_REASON: pa.nulls(len(texts), pa.string())})
    return stage(batch).column(DROP_REASON).to_pylist()


def test_skip_technical_lines_keeps_a_code_block_inside_prose():
    # An Apps Script help page (real) with a HumanEval-X C++ program pasted after its second paragraph:
    # the code's numbers and operators fail the paper's alphabetic-word ratio; skipping technical lines
    # measures the page's prose and the program's comments.
    page = by_id("web_commoncrawl_samples.jsonl.gz", "dolma-cc2019-0319").split("\n\n")
    code = next(r["text"] for r in read_jsonl("code_humanevalx_linux.jsonl.gz") if r["id"] == "humanevalx-CPP-20")
    page = "\n\n".join(page[:2] + [code] + page[2:])
    assert gopher_reasons("gopher_quality", [page]) == ["gopher_quality:alpha_words"]
    assert gopher_reasons("gopher_quality", [page], skip_technical_lines=True) == [None]


def test_skip_technical_lines_still_drops_code_and_repetition():
    # Code pages: gopher_quality alone now passes some (their comments are prose); with c4's code_lines
    # scope after it, as the chain runs them (bench/bench_filter_chain.py), every one goes.
    code = [r["text"] for r in read_jsonl("code_humanevalx_linux.jsonl.gz") if r["lang"] in ("c", "java", "js")][:40]
    kept = [t for t, r in zip(code, gopher_reasons("gopher_quality", code, skip_technical_lines=True)) if r is None]
    assert kept and c4_reasons(kept, curly_bracket_scope="code_lines") == ["c4:curly_bracket"] * len(kept)
    junk = junk_documents(seed=3, per_kind=20)["repeated_lines"]
    assert None not in gopher_reasons("gopher_repetition", junk, skip_technical_lines=True)
    for name in ("gopher_quality", "gopher_repetition"):
        assert build_stage({"name": name}).config.skip_technical_lines is False  # the paper's default


# A Javadoc-style Firebase class page of the Common Crawl sample: its one method's description is in the
# summary table and again in the details, 2 copies.
JAVADOC_PAGE = "dolma-cc2019-0315"


def test_reference_page_copies_keeps_a_javadoc_page():
    page = by_id("web_commoncrawl_samples.jsonl.gz", JAVADOC_PAGE)
    assert tr.reference_pages(pa.array([page])).tolist() == [True]
    options = {"skip_technical_lines": True}
    assert gopher_reasons("gopher_repetition", [page], **options) == ["gopher_repetition:dup_5_gram"]
    assert gopher_reasons("gopher_repetition", [page], **options, reference_page_copies=2) == [None]
    # a third copy of the page's description counts again
    description = "Returns the unique string identifier for the provider type with which the credential is associated."
    assert page.count(description) == 2
    thrice = page + "\n\n" + description
    assert gopher_reasons("gopher_repetition", [thrice], **options, reference_page_copies=2) != [None]
    assert build_stage({"name": "gopher_repetition"}).config.reference_page_copies == 1  # the paper


def test_reference_page_copies_measures_other_pages_as_the_paper():
    # Prose with no API lines is not a reference page: a paragraph given twice is repetition as before.
    article = next(r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz") if len(r["text"].split("\n")) >= 4)
    paragraphs = article.split("\n")
    doubled = "\n\n".join(paragraphs + paragraphs[:len(paragraphs) // 2 + 1])
    assert tr.reference_pages(pa.array([doubled])).tolist() == [False]
    assert gopher_reasons("gopher_repetition", [doubled], reference_page_copies=2) == \
        gopher_reasons("gopher_repetition", [doubled]) != [None]
    junk = junk_documents(seed=3, per_kind=20)["repeated_lines"]
    assert None not in gopher_reasons("gopher_repetition", junk, skip_technical_lines=True, reference_page_copies=2)


def test_documents_allowed_one_copy_get_the_kernels_numbers():
    # One document allowed 2 copies sends the batch to numpy; every other one must measure as by default
    # (the compiled kernel where built).
    texts = [r["text"] for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", limit=200) if r["text"]]
    text, cjk = pa.array(texts), tr.cjk_mask(None, len(texts))
    copies = np.ones(len(texts), dtype=np.int64)
    copies[0] = 2
    mixed = tr.repetition_stats(text, cjk, [2, 5], 2, copies=copies)
    default = tr.repetition_stats(text, cjk, [2, 5], 2)
    for field in ("n_chars", "paragraphs", "dup_paragraphs", "dup_paragraph_chars", "lines", "dup_lines", "dup_line_chars"):
        assert np.array_equal(getattr(mixed, field)[1:], getattr(default, field)[1:]), field
    for n in (2, 5):
        assert np.array_equal(mixed.duplicate_chars[n][1:], default.duplicate_chars[n][1:])
    fewer = tr.repetition_stats(text, cjk, [2, 5], 2, copies=np.full(len(texts), 2))
    assert (fewer.dup_lines <= default.dup_lines).all() and (fewer.dup_lines < default.dup_lines).any()


def test_phrase_rules_read_the_whole_line_when_its_tail_is_trimmed():
    # C4 removes a line holding a policy phrase or "javascript" wherever in the line; trimming the line's
    # unterminated tail must not take the phrase away first and so keep the line.
    post = by_id("en_ud_ewt_web_docs.jsonl.gz", WEBLOG_POST)
    sentence = post[:post.index("were buried on Saturday.") + len("were buried on Saturday.")]
    options = {"min_sentences_words": 30, "trim_unterminated_tail": True}
    kept = c4_text([post + "\n" + sentence + " See the photos here"], **options)[0]
    assert kept.endswith("\n" + sentence)  # an ordinary tail: the line's sentence stays
    for tail in ("Read our Privacy Policy", "Please enable JavaScript"):
        kept = c4_text([post + "\n" + sentence + " " + tail], **options)[0]
        assert "\n" not in kept and kept.endswith("they refuse to go quietly."), tail


def test_extra_policy_phrases_remove_copyright_lines():
    # Two copyright notices of the Common Crawl sample, 50 words in three sentences: with min_sentences_words
    # the page keeps enough words to pass; the notices' own phrases remove both lines (the paper's list
    # names cookies and terms of use, not copyright).
    notices = ["© The Allen Institute for Artificial Intelligence - All Rights Reserved.",
               next(line for r in read_jsonl("web_commoncrawl_samples.jsonl.gz") for line in (r["text"] or "").split("\n")
                    if line.startswith("Copyright: © 2013 IJDDR"))]
    page = "\n".join(notices)
    assert c4_reasons([page], min_sentences_words=30) == [None]
    assert c4_reasons([page], min_sentences_words=30,
                      extra_policy_phrases=["©", "All Rights Reserved"]) == ["c4:min_sentences"]
    assert C4.Config().extra_policy_phrases == ()  # the paper's six phrases only


def test_extra_policy_phrases_run_the_same_with_or_without_the_kernel():
    texts = [r["text"] for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", limit=300) if r["text"]]
    text, cjk = pa.array(texts), tr.cjk_mask(None, len(texts))
    config = C4.Config(extra_policy_phrases=("all rights reserved", "licensed under"))  # ASCII: the kernel runs
    a, b = line_rules(text, cjk, config, native=None), line_rules(text, cjk, config, native=False)
    assert a.doc_reason.tolist() == b.doc_reason.tolist() and a.text.equals(b.text)
    assert a.lines_removed.get("policy", 0) > line_rules(text, cjk, C4.Config(), native=False).lines_removed.get("policy", 0)


# Reference pages of the Common Crawl sample that FineWeb's duplicate-line rule (1% of the characters) drops
# for their repeated descriptions: the Javadoc-style Firebase page above, a Cast SDK class page ("Value must
# not be null." under each parameter) and a ROS question that states its question twice (title, last line).
REFERENCE_PAGES = (JAVADOC_PAGE, "dolma-cc2019-0318", "dolma-cc2019-0252")
CHAIN_STAGES = ("gopher_repetition", "c4", "fineweb")


def run_stages(texts: list[str], stages: list[dict]) -> pa.RecordBatch:
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                        DROP_REASON: pa.nulls(len(texts), pa.string())})
    for options in stages:
        stage = build_stage(options)
        stage.setup()
        batch = stage(batch)
    return batch


def chain_stages(**fineweb) -> list[dict]:
    """gopher_repetition and c4 with the chain's options (tests/test_rules_decisions.py), then fineweb."""
    from test_rules_decisions import CHAIN_OPTIONS

    return [{"name": name, **CHAIN_OPTIONS[name]} for name in CHAIN_STAGES[:2]] + [{"name": "fineweb", **fineweb}]


def test_fineweb_reference_page_copies_keeps_reference_pages_after_c4():
    pages = [by_id("web_commoncrawl_samples.jsonl.gz", doc) for doc in REFERENCE_PAGES]
    assert tr.reference_pages(pa.array(pages)).all()
    dropped = run_stages(pages, chain_stages())
    assert dropped.column(DROP_REASON).to_pylist() == ["fineweb:char_dup_ratio"] * 3  # the reference's rule
    kept = run_stages(pages, chain_stages(reference_page_copies=2))
    assert kept.column(DROP_REASON).to_pylist() == [None] * 3
    # gopher_repetition recognised them on the page as it came and recorded it; c4 then removed the signature
    # lines, so fineweb would not recognise them from the text it gets
    assert kept.column("reference_page").to_pylist() == [True] * 3
    assert not tr.reference_pages(kept.column("text")).any()
    rewritten = kept.drop_columns(["reference_page"])
    assert run_stages(rewritten.column("text").to_pylist(), [{"name": "fineweb", "reference_page_copies": 2}]) \
        .column(DROP_REASON).to_pylist() == ["fineweb:char_dup_ratio"] * 3
    assert build_stage({"name": "fineweb"}).config.reference_page_copies == 1  # the reference
    with pytest.raises(ValueError, match="reference_page_copies"):
        build_stage({"name": "fineweb", "reference_page_copies": 0})


def test_fineweb_reference_page_copies_still_drops_repetition():
    # a third copy of a reference page's line counts again
    page = by_id("web_commoncrawl_samples.jsonl.gz", "dolma-cc2019-0318")
    assert page.count("Value must not be null.") == 2
    thrice = page + "\n\nValue must not be null."
    assert run_stages([thrice], chain_stages(reference_page_copies=2)).column(DROP_REASON).to_pylist() \
        == ["fineweb:char_dup_ratio"]
    # junk is not a reference page, and a page of code is one but goes to c4 first
    junk = junk_documents(seed=3, per_kind=20)
    texts = junk["repeated_lines"] + junk["code"]
    reasons = run_stages(texts, chain_stages(reference_page_copies=2)).column(DROP_REASON).to_pylist()
    assert None not in reasons


def test_fineweb_counts_with_copies_run_the_same_with_or_without_the_kernel():
    texts = [r["text"] for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", limit=300) if r["text"]]
    text, cjk = pa.array(texts), tr.cjk_mask(None, len(texts))
    copies = np.where(tr.reference_pages(text), 2, 1)
    assert (copies == 2).any()
    args = (text, cjk, tr.TERMINAL_PUNCTUATION, 30, 10)
    compiled, numpy_ = tr.fineweb_counts(*args, copies=copies), tr.fineweb_counts(*args, native=False, copies=copies)
    for field in ("newlines", "chars", "lines", "punct_lines", "short_lines", "dup_chars", "words"):
        assert np.array_equal(getattr(compiled, field), getattr(numpy_, field)), field
    default = tr.fineweb_counts(*args)
    assert np.array_equal(compiled.dup_chars[copies == 1], default.dup_chars[copies == 1])
    assert (compiled.dup_chars[copies == 2] < default.dup_chars[copies == 2]).any()


def test_the_reference_page_column_is_on_every_batch():
    # a batch with no row to check still gets the column, so that a run's shards share one schema
    stage = build_stage({"name": "fineweb", "reference_page_copies": 2, "languages": ["zh"]})
    batch = pa.RecordBatch.from_pydict({"id": ["a"], "text": ["Some text."], "lang": ["en"],
                                        DROP_REASON: pa.nulls(1, pa.string())})
    out = stage(batch)
    assert out.schema.field("reference_page").type == pa.bool_() and out.column("reference_page").null_count == 1
    assert "reference_page" not in build_stage({"name": "fineweb"})(batch).schema.names


# A Russian article on C (Common Crawl sample, tuning half of bench/bench_filter_chain.py): seven code listings,
# each followed by its caption and the article's prose.
C_TRICKS = "dolma-cc2019-0464"


def page_with_code_block() -> str:
    """The Apps Script help page (real) with a HumanEval-X C++ program (real) pasted after its second paragraph."""
    page = by_id("web_commoncrawl_samples.jsonl.gz", "dolma-cc2019-0319").split("\n\n")
    code = next(r["text"] for r in read_jsonl("code_humanevalx_linux.jsonl.gz") if r["id"] == "humanevalx-CPP-20")
    return "\n\n".join(page[:2] + [code] + page[2:])


def test_code_pages_scope_keeps_prose_with_code_blocks():
    pages = [by_id("web_commoncrawl_samples.jsonl.gz", C_TRICKS), page_with_code_block()]
    assert c4_reasons(pages, curly_bracket_scope="code_lines") == ["c4:curly_bracket"] * 2
    assert c4_reasons(pages, curly_bracket_scope="code_pages") == [None, None]
    # the line rules still remove the block's lines: what stays is the prose
    kept = c4_text(pages[1:], curly_bracket_scope="code_pages")[0]
    assert "#include" not in kept and "{" not in kept and kept.endswith(page_with_code_block().rstrip()[-40:])


def test_code_pages_scope_still_drops_code():
    # Every program of HumanEval-X and every Linux chunk that holds a code line: a source file's prose is in
    # comments and docstrings, indented or followed by code to its end.
    from curation.stages.c4 import CODE_LINE

    code = [r["text"] for r in read_jsonl("code_humanevalx_linux.jsonl.gz")
            if any(re.search(CODE_LINE, line.strip()) for line in r["text"].split("\n"))]
    assert len(code) > 1000
    assert c4_reasons(code, curly_bracket_scope="code_pages").count("c4:curly_bracket") == len(code)
    # a JSON-LD export and a page of LaTeX blocks (Common Crawl sample): code lines and little prose after
    json_ld, latex = (by_id("web_commoncrawl_samples.jsonl.gz", doc) for doc in ("dolma-cc2019-0693", "dolma-cc2019-0150"))
    assert c4_reasons([json_ld, latex], curly_bracket_scope="code_pages") == ["c4:curly_bracket"] * 2
    # a page that ends in its code block: nothing of the page follows the code
    page = by_id("web_commoncrawl_samples.jsonl.gz", "dolma-cc2019-0319") + "\n\n" + code[0]
    assert c4_reasons([page], curly_bracket_scope="code_pages") == ["c4:curly_bracket"]



def test_legal_banners_are_notices_not_prose_about_the_law():
    # tests/junk.py's legal banners come from the Common Crawl sample's own lines: footers and notices, not
    # the sentences of an article about copyright reform or a cookie-policy page's explanations, which
    # name the same subjects and are prose the rules should keep; the chain's rules drop every banner.
    from junk import web_junk
    from test_rules_decisions import CHAIN_OPTIONS

    web = [r for r in read_jsonl("web_commoncrawl_samples.jsonl.gz") if r["text"] and r["subset"] != "ccnet_head"]
    banners = web_junk(web)["legal_banner"]
    lines = {line for banner in banners for line in banner.split("\n")}
    assert len(banners) >= 20
    assert any(line.startswith("By clicking “Post Your Answer”, you agree") for line in lines)
    assert not any("SCCR" in line or line.startswith("Cookies are small text files") for line in lines)
    stages = [{"name": name, **CHAIN_OPTIONS.get(name, {})} for name in ("gopher_quality", "gopher_repetition", "c4", "fineweb")]
    assert None not in run_stages(banners, stages).column(DROP_REASON).to_pylist()
