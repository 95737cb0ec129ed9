"""The English-vs-unknown-language evaluation of `lid`, built from ../shared/data (tests and bench_lid).

Positives: English documents of at least 200 characters: GUM, UD EWT web, WikiText-2, and the web
samples that are English (`lang: en` in the file, the 37 WARC pages, all from English sites, and the
Common Crawl pages listed in WEB_ENGLISH, read by hand: their running text is English; mostly the
catalogue records, API references and site menus that lid.176 scores under 0.7).

Negatives: documents in languages lid.176 has no label for: the ten lingua languages it lacks (Luganda,
Maori, Oromo, Shona, Sotho, Tigrinya, Tswana, Tsonga, Xhosa, Zulu; Norwegian `nb` is left out, lid.176
knows it as `no`), `doc3` units, plus two web pages in Amis and in Min Nan (romanised, Wikipedia
pages). lingua `sentence` units of those languages are a harder, shorter extra set.

Split: crc32 of the document id, even = tune, odd = test. The cut-offs in `stages/lid.py` were chosen on
`tune` only.
"""

from __future__ import annotations

import zlib

from conftest import read_jsonl

# lid.176 labels none of these (checked against the model's label list in test_lid_english_evidence).
UNKNOWN_LINGUA = ("lg", "mi", "om", "sn", "st", "ti", "tn", "ts", "xh", "zu")
ENGLISH_FILES = ("en_gum_docs.jsonl.gz", "en_ud_ewt_web_docs.jsonl.gz", "en_wikitext2_valid_test.jsonl.gz")
MIN_CHARS = 200
# Common Crawl pages (web_commoncrawl_samples, `lang` null) whose text is English, by reading. Pages left
# out as mixed: 0001 (Swedish recipes), 0292 (labels in many languages), 0293 (Latin taxonomy), 0489
# (Italian log), 0490 and 0492 (code), 0528 (Sicilian and German user boxes), 0693 (German record as JSON).
WEB_ENGLISH = frozenset(f"dolma-cc2019-{n:04d}" for n in (
    21, 38, 47, 56, 60, 66, 80, 86, 214, 237, 238, 294, 298, 313, 316, 318, 357, 408, 495, 496, 588, 617,
    627, 653, 673))
WEB_UNKNOWN = {"dolma-cc2019-0395": "ami", "dolma-cc2019-0695": "nan"}


def split_of(doc_id: str) -> str:
    return "test" if zlib.crc32(doc_id.encode()) % 2 else "tune"


def evaluation_rows() -> list[dict]:
    """Rows with id, text, gold (`en` or a language lid.176 lacks), group and split."""
    rows = []

    def add(doc_id, text, gold, group):
        rows.append({"id": doc_id, "text": text, "gold": gold, "group": group, "split": split_of(doc_id)})

    for name in ENGLISH_FILES:
        for r in read_jsonl(name):
            if len(r["text"]) >= MIN_CHARS:
                add(r["id"], r["text"], "en", name.split("_")[1])
    for r in read_jsonl("web_commoncrawl_samples.jsonl.gz"):
        if len(r["text"]) < MIN_CHARS:
            continue
        if r["lang"] == "en" or r["subset"] == "warc_page_alltext" or r["id"] in WEB_ENGLISH:
            add(r["id"], r["text"], "en", "web")
        elif r["id"] in WEB_UNKNOWN:
            add(r["id"], r["text"], WEB_UNKNOWN[r["id"]], "web")
    for r in read_jsonl("lid_lingua_75lang.jsonl.gz"):
        if r["lang"] in UNKNOWN_LINGUA:
            add(r["id"], r["text"], r["lang"], "lingua_" + r["unit"])
    return rows
