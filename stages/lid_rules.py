"""English evidence for `lid`: signals read from the text itself, beside fastText's score.

lid.176 calls text in languages it was not trained on (Zulu, Xhosa, Shona, Luganda, Maori, Oromo, ...)
English with a low score, which is why `lid` asks 0.7 of an English prediction. Real English that is
not running prose (API references, catalogue records, menus, pages full of URLs) also scores under 0.7.
Two word statistics tell them apart, computed over the whole Arrow array at once:

- `stop_share`: the share of words that are English function words. Measured on the tuning half
  (`bench/bench_lid.py`): English of at least 200 characters that fastText scores under 0.7 has a
  median of 0.11; text in the ten lingua languages lid.176 lacks has 0 at the median and under 0.035
  at the 95th percentile. Words of one or two letters are left out except a few English-only ones
  ("a", "i", "he", "me", "no", "to" are also Maori, Bantu or Oromo words).
- `vowel_final`: the share of words of three letters or more that end in a vowel. Bantu languages,
  Maori and Oromo end nearly every word in a vowel (median 0.95 on the unknown-language documents, 5th
  percentile 0.74); English ends about a quarter of its words so (low-scoring English: median 0.14 to
  0.26, at most 0.65).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# NLTK's English stop-word list, kept to words of three letters or more, plus the two-letter words that
# are not also frequent words of the languages above.
STOP_WORDS_EN = tuple("""about above after again against all and any are because been before being below
between both but can could did does doing down during each few for from further had has have having her
here hers herself him himself his how into its itself just more most myself nor not now off once only
other our ours ourselves out over own same she should some such than that the their theirs them
themselves then there these they this those through too under until very was were what when where which
while who whom why will with would you your yours yourself yourselves of is it in on as at by or we if be
an""".split())

WORD_SPLIT = r"[^\p{L}']+"
VOWEL_FINAL = r"[aeiouáéíóúāēīōū]$"


def english_evidence(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(stop_share, vowel_final) per document, as float64 arrays (0 for a document without words)."""
    n = len(text)
    words = pc.split_pattern_regex(pc.utf8_lower(text), WORD_SPLIT)
    flat = pc.list_flatten(words)
    parent = pc.list_parent_indices(words).to_numpy()
    length = pc.utf8_length(flat).to_numpy(zero_copy_only=False)
    is_word = length > 0
    is_long = length >= 3
    is_stop = pc.is_in(flat, value_set=pa.array(STOP_WORDS_EN, pa.string())).to_numpy(zero_copy_only=False)
    ends_vowel = pc.match_substring_regex(flat, VOWEL_FINAL).to_numpy(zero_copy_only=False)
    words_per_doc = np.bincount(parent[is_word], minlength=n)
    long_per_doc = np.bincount(parent[is_long], minlength=n)
    stop_share = np.bincount(parent[is_stop & is_word], minlength=n) / np.maximum(words_per_doc, 1)
    vowel_final = np.bincount(parent[is_long & ends_vowel], minlength=n) / np.maximum(long_per_doc, 1)
    return stop_share, vowel_final
