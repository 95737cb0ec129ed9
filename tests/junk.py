"""Realistic junk built from the real text of ../shared/data (for rule and quality tests and benches).

Each kind imitates what web crawls are full of: navigation menus, keyword lists, table dumps, fragments,
code pasted as prose, repeated lines, all-caps spam and cookie banners.
"""

from __future__ import annotations

import random

from conftest import read_jsonl

COOKIE = ("We use cookies to improve your experience on our site. By continuing to browse you agree to our use "
          "of cookies. Read our Privacy Policy and Terms of Use. Accept all cookies. Manage preferences.")
MENU = ["Home", "About us", "Products", "Services", "Contact", "Blog", "News", "Login", "Register", "Cart",
        "FAQ", "Support", "Careers", "Press", "Sitemap", "Search", "Shop", "Deals", "Help", "Account"]


def junk_documents(seed: int = 0, per_kind: int = 40, prose: list[str] | None = None) -> dict[str, list[str]]:
    """Junk of each kind; words and sentences come from `prose` (default: WikiText and GUM)."""
    rng = random.Random(seed)
    if prose is None:
        prose = [r["text"] for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz")] + \
                [r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz")]
    words = [w for text in prose[:40] for w in text.split() if w.isalpha()]
    sentences = [s.strip() + "." for text in prose for s in text.split(". ") if 40 < len(s) < 200]
    code = [r["text"] for r in read_jsonl("code_humanevalx_linux.jsonl.gz") if len(r["text"]) > 400]
    kinds: dict[str, list[str]] = {k: [] for k in ("menu", "keywords", "table", "fragments", "code",
                                                  "repeated_lines", "all_caps", "cookie_banner")}
    for _ in range(per_kind):
        kinds["menu"].append("\n".join(rng.sample(MENU, 12) + [" | ".join(rng.sample(MENU, 6)), "© 2019 All rights reserved"]))
        kinds["keywords"].append(", ".join(rng.choice(words).lower() for _ in range(rng.randint(60, 150))))
        kinds["table"].append("\n".join("\t".join(str(rng.randint(0, 9999)) for _ in range(6)) for _ in range(30)))
        kinds["fragments"].append("\n".join(" ".join(rng.choice(sentences).split()[:rng.randint(2, 5)])
                                            for _ in range(rng.randint(15, 40))))
        kinds["code"].append(rng.choice(code))
        line = rng.choice(sentences)
        kinds["repeated_lines"].append("\n".join([line] * rng.randint(5, 20) + rng.sample(sentences, 3)))
        kinds["all_caps"].append(" ".join(rng.sample(sentences, 6)).upper() + " BUY NOW!!! LIMITED OFFER!!!")
        kinds["cookie_banner"].append(COOKIE + "\n" + "\n".join(rng.sample(MENU, 8)))
    return kinds


def word_salad(seed: int = 0, count: int = 40, prose: list[str] | None = None) -> list[str]:
    """Real English words in random order, dressed as sentences (spun / generated spam)."""
    rng = random.Random(seed)
    prose = prose if prose is not None else [r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz")]
    words = [w for text in prose for w in text.split() if w.isalpha()]
    docs = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(5, 12)):
            picked = [rng.choice(words).lower() for _ in range(rng.randint(8, 20))]
            sentences.append(" ".join(picked).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


# A legal line names cookies, privacy, terms of use or service, copyright or reserved rights. Not "terms of"
# alone ("in terms of quality"), nor "disclaimer" (a TV episode's "disclaimer regarding ..."), nor the "©" of
# mojibake ("CafÃ©" is "Café"): those picked 7 prose lines of 50 on the tuning half, so "banners" held
# whole paragraphs of prose that C4 rightly keeps.
LEGAL = r"cookie|privacy|terms of (use|service)|terms and conditions|copyright|rights reserved|(?<!Ã)©"
# A longer line is a banner only when it holds a notice's wording: it claims rights, tells the reader what
# using the site means, tells how to control cookies, or links the legal pages. Without this, a legal word
# was enough, and the test half of bench/bench_filter_chain.py drew 20 of its 53 legal lines from an article
# about copyright reform (Creative Commons at WIPO), a paper title on privacy interfaces, "copyright-free
# airplane pictures" and a cookie-policy page's explanations ("Cookies are small text files ..."): prose
# about those subjects, not banners, which no rule should drop. The tuning half's 54 lines all stay.
NOTICE = (r"(?<!Ã)©|rights reserved|you agree|by (continuing|clicking|using)|we use cookies|uses cookies|"
          r"use of cookies|cookies enabled|licensed under|terms of (use|service)|terms and conditions|"
          r"(privacy|cookie|cookies) policy|(control|manage|block|enable|disable)\w*( your)? cookies|"
          r"[|•]\s*(privacy|terms)")
ENGLISH = ("the", "and", "of", "to", "is", "you", "our", "this", "for")


def web_junk(web: list[dict], seed: int = 0) -> dict[str, list[str]]:
    """Junk cut from the real pages of the Common Crawl sample (`web` rows): `web_boilerplate` is a page's
    own short lines (at most 6 words: menus, dates, footers, widget labels) in page order, one document
    per page that has at least 15 of them; `legal_banner` joins 3-6 real English cookie, privacy and
    copyright lines (several pages' banners in one document, as a page made only of its footer): a short
    line naming them (under 8 words: a footer), or a longer English one in a notice's words (NOTICE)."""
    import re

    rng = random.Random(seed)
    boilerplate, legal = [], []
    for row in web:
        lines = [line.strip() for line in (row["text"] or "").split("\n") if line.strip()]
        short = [line for line in lines if len(line.split()) <= 6]
        if len(short) >= 15:
            boilerplate.append("\n".join(short))
        for line in lines:
            words = line.lower().split()
            if re.search(LEGAL, line, re.I) and len(words) >= 3 and (
                    len(words) < 8 or (re.search(NOTICE, line, re.I) and any(w in ENGLISH for w in words))):
                legal.append(line)
    banners = []
    for _ in range(min(40, len(legal) // 3)):
        banners.append("\n".join(rng.sample(legal, min(len(legal), rng.randint(3, 6)))))
    return {"web_boilerplate": boilerplate, "legal_banner": banners}
