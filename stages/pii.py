"""`pii`: find personal data in documents and replace it by placeholders (or list it in a column).

Kinds, found in this order (each kind's finds are masked before the next kind looks, so one string is
one kind: a valid ID number is never also a phone number):

- `email`: `local@domain.tld` (ASCII). An "address" whose TLD is an image or code file extension is
  a file name (`logo@2x.png`), not an address.
- `ip`: IPv6 (full or `::`-compressed) and IPv4, both checked by `ipaddress`. Non-public addresses
  (private, loopback, link-local, documentation ranges: `127.0.0.1`, `192.168.1.1`) identify nobody
  and fill tutorials and code, so they stay unless `keep_non_public_ips: false`. Look-alikes that stay:
  a dotted quad inside a longer dotted run (`1.2.3.4.5`), next to letters or digits, with an octet over
  255 or a leading zero, or right after a version word (`v1.2.3.4`, `version 1.2.3.4`, `build`,
  `release`, `版本`). A bare `1.2.3.4` is a valid public address and is replaced.
- `cn_id`: mainland-China resident ID numbers: 18 characters, a known province code, a birth date
  that exists and is not in the future, and the ISO 7064 MOD 11-2 check character (the last one, `X`
  for 10). A random 18-digit number passes all three about once in 4,000 tries (1/11 checksum x
  about 1/25 plausible dates x 34/90 province codes), so numbers that only look like IDs stay.
- `card`: payment card numbers: 13-19 digits, optionally in groups separated by single spaces or
  dashes (one separator kind, groups of 4, or Amex/Diners 4-6-5 / 4-6-4), an issuer prefix that
  exists (Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Discover/UnionPay/Maestro 6, JCB 35,
  Diners 30/36/38/39) and a valid Luhn check digit. Luhn alone passes one random number in ten;
  with the prefix rule about one in twenty.
- `phone`: mainland-China mobiles (`1[3-9]X XXXX XXXX`, optional `+86`/`0086`, spaces or dashes),
  international numbers written with `+` (8-15 digits in all, E.164's limit) and North American
  numbers with separators (`(212) 555-0143`, `212-555-0143`; area code and exchange start with 2-9).
  Bare digit runs without `+` or separators are not phones (they are counts, prices, ids).

All kinds need a non-alphanumeric character (or the text's edge) on both sides, so a number inside a
longer number, a hash or a word is never taken.

The work is vectorised over the batch: one RE2 pass (`match_substring_regex`) finds the rows that
have any candidate at all, and only those go on; per kind, the candidates of those rows are cut out
with Arrow (`regex_spans.split_on_matches`) and only the candidate strings are checked in Python
(checksums, dates, `ipaddress`): their number, not the number of documents, sets that cost.

`mode: replace` writes `placeholders[kind]` over each find; `mode: annotate` leaves the text and adds
`column` (default `pii`): per row a list of `{kind, start, end}` (code-point offsets into the text).
Metrics: `found:<kind>` (replaced or annotated), `rejected:<kind>` (candidates that failed a check),
`rows_with_pii`.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import TEXT, Stage, live_mask, register_stage, set_column
from curation.stages.regex_spans import sanitize, split_on_matches

KINDS = ("email", "ip", "cn_id", "card", "phone")
DEFAULT_PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>", "cn_id": "<CN_ID>", "card": "<CARD>"}
# Per kind, a noncharacter that stands in for each found string while later kinds look (same length,
# so offsets into the original text hold), replaced by the placeholder at the end.
_MASK = {"email": "\ufdd1", "ip": "\ufdd2", "cn_id": "\ufdd3", "card": "\ufdd4", "phone": "\ufdd5"}

# --- candidate patterns (RE2) -----------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
EMAIL = rf"[A-Za-z0-9][A-Za-z0-9._%+\-]*@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,24}}"
_H = r"[0-9A-Fa-f]{1,4}"
IPV6 = rf"(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}(?::{_H}){{1,6}}"
IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
CN_ID = r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
CARD = r"\d(?:[ \-]?\d){12,18}"
_CN_MOBILE = r"(?:(?:\+|00)86[ \-]?)?1[3-9]\d[ \-]?\d{4}[ \-]?\d{4}"
_INTL = r"\+[1-9]\d{0,2}[ \-.]?(?:\(\d{1,4}\)[ \-.]?)?\d{1,4}(?:[ \-.]?\d{1,4}){1,5}"
_NANP = r"\([2-9]\d{2}\)[ \-.]?[2-9]\d{2}[ \-.]\d{4}|[2-9]\d{2}([\-.])[2-9]\d{2}[\-.]\d{4}"
PHONE = f"{_CN_MOBILE}|{_INTL}|{_NANP}"
PATTERNS = {"email": EMAIL, "ip": f"{IPV6}|{IPV4}", "cn_id": CN_ID, "card": CARD, "phone": PHONE}

# --- checks on one candidate (pure functions) ------------------------------------------------------

_ALNUM = re.compile(r"[0-9A-Za-z]")
FILE_EXTENSIONS = frozenset("png jpg jpeg gif svg webp bmp ico tif tiff css js ts py json xml pdf".split())
_VERSION_BEFORE = re.compile(r"(?:\bv|\bver\.?|version|release|build|版本|版)\s*[:：]?\s*$", re.IGNORECASE)
CN_PROVINCES = frozenset((11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
                          50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82))
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_CARD_GROUPS = re.compile(r"\d{4}(?:([ \-])\d{4}(?:\1\d{4}(?:\1\d{4}(?:\1\d{1,3})?)?|\1\d{1,3})?|"
                          r"([ \-])\d{6}\2\d{4,5})")


def _edge_ok(before: str, after: str) -> bool:
    return not _ALNUM.match(before[-1:] or " ") and not _ALNUM.match(after[:1] or " ")


def _number_edge_ok(before: str, after: str) -> bool:
    """Numbers (cards, IDs, phones) also stay when they follow a URL path or query character: ids in
    links (`facebook.com/pages/p/388213067901331` passed Luhn by chance in the shared web text)."""
    return _edge_ok(before, after) and before[-1:] not in ("/", "=", "_", "#", "&", "?")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer_ok(digits: str) -> bool:
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # Amex
    if digits[0] == "6":
        return 16 <= n <= 19 or (two in (50, 56, 57, 58, 63, 67) and n >= 12)  # Discover, UnionPay, Maestro
    if two == 35:
        return 16 <= n <= 19  # JCB
    if two in (30, 36, 38, 39):
        return 14 <= n <= 19  # Diners
    if two in (50, 56, 57, 58):
        return n >= 12  # Maestro
    return False


def card_ok(candidate: str, before: str = "", after: str = "") -> bool:
    """A payment card number: separators regular, issuer prefix known, Luhn check digit right."""
    if not _number_edge_ok(before, after) or (after[:1] == "-" and after[1:2].isdigit()):
        return False
    digits = candidate.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19:
        return False
    if len(digits) != len(candidate) and not _CARD_GROUPS.fullmatch(candidate):
        return False
    return card_issuer_ok(digits) and luhn_ok(digits)


def cn_id_ok(candidate: str, before: str = "", after: str = "", today: datetime.date | None = None) -> bool:
    """A mainland-China resident ID: province code, a real past birth date, MOD 11-2 check character."""
    if len(candidate) != 18 or not _number_edge_ok(before, after) or not candidate[:17].isdigit():
        return False
    if int(candidate[:2]) not in CN_PROVINCES:
        return False
    try:
        born = datetime.date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > (today or datetime.date.today()):
        return False
    total = sum(int(d) * w for d, w in zip(candidate[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == candidate[17].upper()


def email_ok(candidate: str, before: str = "", after: str = "") -> bool:
    local, _, domain = candidate.rpartition("@")
    if ".." in local or local.endswith(".") or after[:1] == "@":
        return False
    return domain.rsplit(".", 1)[-1].lower() not in FILE_EXTENSIONS


def ip_ok(candidate: str, before: str = "", after: str = "", keep_non_public: bool = True) -> bool:
    """An IPv4/IPv6 address standing on its own (not a version number, not part of a longer run)."""
    if not _edge_ok(before, after) or before[-1:] in (".", ":") or after[:1] == ":":
        return False
    if after[:1] == "." and after[1:2].isalnum():
        return False  # 1.2.3.4.5, or a host name going on
    if "." in candidate and _VERSION_BEFORE.search(before):
        return False
    if ":" in candidate:
        groups = [g for g in candidate.split(":") if g]
        if len(groups) < 3 or sum(map(len, groups)) < 6:
            return False  # `l[1::2]` (a Python slice) is a valid address; real ones have more to them
    else:
        octets = candidate.split(".")
        if any(len(part) > 1 and part[0] == "0" for part in octets):
            return False  # leading zeros: not how addresses are written (and ambiguous: octal)
        if all(len(part) == 1 for part in octets):
            # section and version numbers ("1.2.1.9.", "PSeMu3 1.3.3.9" in the shared text); the real
            # addresses of this shape are public resolvers (1.1.1.1, 8.8.8.8), nobody's personal data
            return False
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return address.is_global or not keep_non_public


_PHONE_CN = re.compile(r"(?:(?:\+|00)86[ \-]?)?1[3-9]\d([ \-]?)\d{4}\1\d{4}")


def phone_ok(candidate: str, before: str = "", after: str = "") -> bool:
    if not _number_edge_ok(before, after) or before[-1:] == "+" or (after[:1] in "-." and after[1:2].isdigit()):
        return False
    digits = re.sub(r"\D", "", candidate)
    if candidate[0] != "+" and not candidate.startswith("0086"):
        if _PHONE_CN.fullmatch(candidate):
            return True
        return len(digits) == 10  # North American, separators checked by the pattern
    if _PHONE_CN.fullmatch(candidate):
        return True
    return 8 <= len(digits) <= 15


# --- the stage ---------------------------------------------------------------------------------------

_BEFORE, _AFTER = 16, 2  # context characters a check sees (version words before; a dot and digit after)
SPAN_TYPE = pa.list_(pa.struct([("kind", pa.string()), ("start", pa.int32()), ("end", pa.int32())]))


def _scatter(values: pa.Array, rows: np.ndarray, base: pa.Array) -> pa.Array:
    """`base` with base[rows[i]] = values[i]."""
    position = np.full(len(base), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    gathered = pc.take(values, pa.array(np.maximum(position, 0)))
    return pc.if_else(pa.array(position >= 0), gathered, base)


@register_stage("pii")
class PII(Stage):
    """Personal data (emails, IPs, phones, China ID numbers, card numbers) replaced by placeholders or listed."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        kinds: tuple[str, ...] = KINDS
        mode: str = "replace"  # or "annotate": text unchanged, finds listed in `column`
        placeholders: dict[str, str] = dataclasses.field(default_factory=dict)  # per kind, over the defaults
        column: str = "pii"
        keep_non_public_ips: bool = True

        def __post_init__(self) -> None:
            object.__setattr__(self, "kinds", tuple(self.kinds))
            unknown = sorted(set(self.kinds) - set(KINDS)) + sorted(set(self.placeholders) - set(KINDS))
            if unknown:
                raise ValueError(f"unknown PII kind(s) {', '.join(unknown)}; the kinds are {', '.join(KINDS)}")
            if self.mode not in ("replace", "annotate"):
                raise ValueError(f"mode must be 'replace' or 'annotate', not {self.mode!r}")
            object.__setattr__(self, "placeholders", {**DEFAULT_PLACEHOLDERS, **self.placeholders})

    def setup(self) -> None:
        kinds = [k for k in KINDS if k in self.config.kinds]  # always in the documented order
        self._kinds = kinds
        self._any = "|".join(f"(?:{PATTERNS[k]})" for k in kinds)
        self._checks = {
            "email": email_ok, "card": card_ok, "phone": phone_ok,
            "cn_id": cn_id_ok,
            "ip": lambda c, b, a: ip_ok(c, b, a, self.config.keep_non_public_ips),
        }

    def find(self, text: pa.Array) -> tuple[pa.Array, dict[str, np.ndarray]]:
        """Mask every find in `text` (sanitized rows): the masked text (each find's characters replaced by
        its kind's mask character) and the finds as arrays `row`, `kind` (index into KINDS), `start`, `end`."""
        masked = text
        found: dict[str, list[np.ndarray]] = {"row": [], "kind": [], "start": [], "end": []}
        for kind in self._kinds:
            pattern = PATTERNS[kind]
            rows = np.flatnonzero(pc.fill_null(pc.match_substring_regex(masked, pattern), False)
                                  .to_numpy(zero_copy_only=False))
            if not len(rows):
                continue
            sub = pc.take(masked, pa.array(rows))
            pieces = split_on_matches(sub, pattern)
            index = pieces.matches()
            # Only the candidates reach Python: their strings, and a few characters around each.
            texts = sub.to_pylist()
            starts, lengths, parents = pieces.start[index].tolist(), pieces.length[index].tolist(), pieces.parent[index].tolist()
            check = self._checks[kind]
            ok = np.zeros(len(index), dtype=bool)
            for i, (row, b, n) in enumerate(zip(parents, starts, lengths)):
                row_text = texts[row]
                ok[i] = check(row_text[b:b + n], row_text[max(b - _BEFORE, 0):b], row_text[b + n:b + n + _AFTER])
            if not ok.all():
                self.metrics[f"rejected:{kind}"] += int((~ok).sum())
            if not ok.any():
                continue
            self.metrics[f"found:{kind}"] += int(ok.sum())
            hit = index[ok]
            found["row"].append(rows[pieces.parent[hit]])
            found["kind"].append(np.full(len(hit), KINDS.index(kind), dtype=np.int8))
            found["start"].append(pieces.start[hit])
            found["end"].append(pieces.start[hit] + pieces.length[hit])
            # Each find becomes a run of its kind's mask character, the same length: later kinds cannot
            # see it, and offsets into the original text stay valid.
            masks = pc.replace_substring_regex(pc.take(pieces.values, pa.array(hit)), r"(?s).", _MASK[kind])
            order = np.arange(len(pieces.values), dtype=np.int64)
            order[hit] = len(pieces.values) + np.arange(len(hit))
            values = pc.take(pa.concat_arrays([pieces.values, masks]), pa.array(order))
            masked = _scatter(pieces.join(values), rows, masked)
        arrays = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in found.items()}
        return masked, arrays

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        c = self.config
        text = batch.column(TEXT)
        live = live_mask(batch).to_numpy(zero_copy_only=False)
        candidate = pc.fill_null(pc.match_substring_regex(text, self._any), False).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(candidate & live)
        finds = {"row": np.zeros(0, dtype=np.int64)}
        if len(rows):
            masked, finds = self.find(sanitize(pc.take(text, pa.array(rows))))
            with_pii = np.unique(finds["row"])
            self.metrics["rows_with_pii"] += len(with_pii)
            if c.mode == "replace" and len(with_pii):
                new = pc.take(masked, pa.array(with_pii))
                for kind in self._kinds:
                    # RE2 replacement strings treat backslashes specially: escape the placeholder's
                    new = pc.replace_substring_regex(new, f"{_MASK[kind]}+", c.placeholders[kind].replace("\\", "\\\\"))
                batch = set_column(batch, TEXT, _scatter(new, rows[with_pii], text))
            finds["row"] = rows[finds["row"]]
        if c.mode == "annotate":
            batch = set_column(batch, c.column, self._span_column(finds, batch.num_rows))
        return batch

    @staticmethod
    def _span_column(finds: dict[str, np.ndarray], n_rows: int) -> pa.Array:
        """Per row a list of {kind, start, end}, sorted by start (empty where nothing was found)."""
        row = finds["row"]
        if not len(row):
            return pa.array([[]] * n_rows, SPAN_TYPE)
        order = np.lexsort((finds["start"], row))
        offsets = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(np.bincount(row, minlength=n_rows), out=offsets[1:])
        kinds = pc.take(pa.array(KINDS, pa.string()), pa.array(finds["kind"][order].astype(np.int64)))
        structs = pa.StructArray.from_arrays(
            [kinds, pa.array(finds["start"][order].astype(np.int32)), pa.array(finds["end"][order].astype(np.int32))],
            fields=list(SPAN_TYPE.value_type))
        return pa.ListArray.from_arrays(pa.array(offsets), structs, type=SPAN_TYPE)
