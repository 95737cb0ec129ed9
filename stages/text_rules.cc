// Compiled kernels of the rule stages (stages/text_rules.py): one pass over a whole Arrow string array.
//
// Loaded with ctypes by curation/rules_native.py; built by scripts/build_kenlm.sh. The Python side keeps
// a numpy/Arrow fallback that gives the same decisions, and tests compare the two.
//
// The library knows no Unicode tables of its own: `flags` (one byte per code point, 0x110000 of them)
// comes from Python, computed with the same Arrow functions and regular expressions the fallback uses
// (white space as utf8_split_whitespace sees it, CJK as \p{Han}\p{Hiragana}\p{Katakana}, letters as \pL).
//
// Equal words and equal n-grams are recognised by 64-bit hashes (as the numpy path does for n-grams):
// with a few thousand distinct n-grams per document the chance of a collision is about 1e-12 per
// document. Lines and paragraphs are compared byte for byte.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr uint8_t SPACE = 1, CJK = 2, LETTER = 4;

inline uint64_t fmix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

inline uint64_t hash_bytes(const uint8_t* p, int64_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(n) * 0xD6E8FEB86659FD93ULL);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ fmix(w)) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, static_cast<size_t>(n));
  return fmix(h ^ (w * 0x94D049BB133111EBULL) ^ static_cast<uint64_t>(n));
}

// Decodes one code point at s[i] (i < end) and advances i. Arrow strings are valid UTF-8; a truncated
// sequence at the end is read as one code point of its lead byte rather than past the buffer.
inline uint32_t decode(const uint8_t* s, int64_t& i, int64_t end) {
  uint32_t c = s[i];
  int64_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (i + len > end) {
    i += 1;
    return c;
  }
  switch (len) {
    case 1: break;
    case 2: c = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F); break;
    case 3: c = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F); break;
    default: c = ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
  }
  i += len;
  return c < 0x110000 ? c : 0;
}

inline int64_t code_points(const uint8_t* s, int64_t begin, int64_t end) {
  int64_t n = 0;
  for (int64_t i = begin; i < end; ++i) n += (s[i] & 0xC0) != 0x80;
  return n;
}

inline bool blank(const uint8_t* s, int64_t begin, int64_t end, const uint8_t* flags) {
  for (int64_t i = begin; i < end;) {
    if (!(flags[decode(s, i, end)] & SPACE)) return false;
  }
  return true;
}

// Open addressing keyed by a 64-bit hash; `slot` holds an entry index or -1.
struct Table {
  std::vector<uint64_t> key;
  std::vector<int32_t> slot;
  uint64_t mask = 0;

  void reset(size_t items) {
    size_t capacity = 16;
    while (capacity < 2 * items) capacity <<= 1;
    if (key.size() < capacity) {
      key.resize(capacity);
      slot.resize(capacity);
    }
    mask = capacity - 1;
    std::fill(slot.begin(), slot.begin() + static_cast<int64_t>(capacity), -1);
  }
};

// Counts duplicate spans (lines or paragraphs) of one document: a span equal, byte for byte, to an
// earlier one. Blank spans (white space only) are skipped. out: spans, duplicates, duplicate characters.
struct SpanCounter {
  Table table;
  std::vector<int64_t> begin, end;

  void count(const uint8_t* s, const std::vector<int64_t>& b, const std::vector<int64_t>& e, const uint8_t* flags,
             int64_t* out) {
    table.reset(b.size());
    begin.clear();
    end.clear();
    int64_t spans = 0, duplicates = 0, chars = 0;
    for (size_t k = 0; k < b.size(); ++k) {
      if (blank(s, b[k], e[k], flags)) continue;
      ++spans;
      uint64_t h = hash_bytes(s + b[k], e[k] - b[k]);
      uint64_t at = h & table.mask;
      bool seen = false;
      while (table.slot[at] >= 0) {
        int32_t j = table.slot[at];
        if (table.key[at] == h && end[j] - begin[j] == e[k] - b[k] &&
            std::memcmp(s + begin[j], s + b[k], static_cast<size_t>(e[k] - b[k])) == 0) {
          seen = true;
          break;
        }
        at = (at + 1) & table.mask;
      }
      if (seen) {
        ++duplicates;
        chars += code_points(s, b[k], e[k]);
      } else {
        table.key[at] = h;
        table.slot[at] = static_cast<int32_t>(begin.size());
        begin.push_back(b[k]);
        end.push_back(e[k]);
      }
    }
    out[0] = spans;
    out[1] = duplicates;
    out[2] = chars;
  }
};

// --- the document rules (gopher_quality, fineweb, c4) -----------------------------------------------
//
// `cls` (uint16 per code point) carries the classes below, each computed in Python from the Arrow function
// or regular-expression class the numpy path uses (text_rules.unicode_classes); `lower_ascii` is the
// ASCII byte utf8_lower gives a code point, or 0 where its lower case is not ASCII.

constexpr uint16_t TRIM = 8,         // removed by utf8_trim_whitespace
    WORD = 16,                       // [\pL\pN_]
    RE_SPACE = 32,                   // \s (RE2: ASCII white space only)
    LOWER_NUM = 64,                  // [\p{Ll}\pN]
    OPENER = 128,                    // text_rules._OPENERS
    CJK_END = 256,                   // [。！？]
    CJK_CLOSE = 512,                 // [”」』）]
    LOWER_LETTER = 1024;             // \pL after utf8_lower

// A list of strings from Python: concatenated bytes and offsets.
struct Strings {
  const uint8_t* data;
  const int64_t* off;
  int64_t n;

  bool ends(const uint8_t* s, int64_t b, int64_t e) const {
    for (int64_t k = 0; k < n; ++k) {
      int64_t len = off[k + 1] - off[k];
      if (len <= e - b && std::memcmp(s + e - len, data + off[k], static_cast<size_t>(len)) == 0) return true;
    }
    return false;
  }
  bool starts(const uint8_t* s, int64_t b, int64_t e) const {
    for (int64_t k = 0; k < n; ++k) {
      int64_t len = off[k + 1] - off[k];
      if (len <= e - b && std::memcmp(s + b, data + off[k], static_cast<size_t>(len)) == 0) return true;
    }
    return false;
  }
  bool equals(const uint8_t* s, int64_t b, int64_t e) const {
    for (int64_t k = 0; k < n; ++k) {
      int64_t len = off[k + 1] - off[k];
      // Compared in line: the entries are a few bytes long, cheaper to compare than to call memcmp for.
      if (len != e - b) continue;
      int64_t i = 0;
      while (i < len && s[b + i] == data[off[k] + i]) ++i;
      if (i == len) return true;
    }
    return false;
  }
};

// A word list to look words up in (gopher_quality's stop words). The words' lengths and first bytes
// turn most words away; entries of at most 8 bytes are then compared as one 64-bit number each (their
// bytes, little-endian), with no branch per byte; longer ones byte for byte.
struct WordSet {
  Strings words;
  uint64_t lengths = 0;  // bit k: some entry is k bytes long (k < 64)
  bool long_entry = false, over_eight = false;
  bool first[256] = {};
  std::vector<uint64_t> packed;
  std::vector<int64_t> packed_length;

  static uint64_t pack(const uint8_t* p, int64_t len) {  // len <= 8
    uint64_t w = 0;
    for (int64_t i = 0; i < len; ++i) w |= uint64_t{p[i]} << (8 * i);
    return w;
  }

  explicit WordSet(const Strings& w) : words(w) {
    for (int64_t k = 0; k < w.n; ++k) {
      const int64_t len = w.off[k + 1] - w.off[k];
      if (len >= 64) long_entry = true;
      else lengths |= uint64_t{1} << len;
      if (len > 0) first[w.data[w.off[k]]] = true;
      if (len > 8) {
        over_eight = true;
      } else {
        packed.push_back(pack(w.data + w.off[k], len));
        packed_length.push_back(len);
      }
    }
  }
  bool has(const uint8_t* s, int64_t b, int64_t e) const {  // e > b
    const int64_t len = e - b;
    if (!first[s[b]] || !(len < 64 ? (lengths >> len) & 1 : long_entry)) return false;
    if (len > 8) return over_eight && words.equals(s, b, e);
    const uint64_t w = pack(s + b, len);
    bool hit = false;
    for (size_t k = 0; k < packed.size(); ++k) hit |= (packed[k] == w) & (packed_length[k] == len);
    return hit;
  }
};

// Non-overlapping occurrences, as pc.count_substring counts them.
inline int64_t count_substring(const uint8_t* s, int64_t b, int64_t e, const uint8_t* p, int64_t m) {
  if (m == 0) return 0;
  int64_t n = 0;
  // memchr finds the candidate first bytes far faster than a byte loop (most text holds few of them).
  for (int64_t i = b; i + m <= e;) {
    const void* hit = std::memchr(s + i, p[0], static_cast<size_t>(e - m - i + 1));
    if (hit == nullptr) break;
    i = static_cast<const uint8_t*>(hit) - s;
    int64_t k = 1;  // patterns are a few bytes: compared in line rather than by a call to memcmp
    while (k < m && s[i + k] == p[k]) ++k;
    if (k == m) {
      ++n;
      i += m;
    } else {
      ++i;
    }
  }
  return n;
}

inline bool contains(const uint8_t* s, int64_t b, int64_t e, const char* p) {
  return count_substring(s, b, e, reinterpret_cast<const uint8_t*>(p), static_cast<int64_t>(std::strlen(p))) > 0;
}

// The start of the code point that ends at `end` (end > begin).
inline int64_t previous(const uint8_t* s, int64_t begin, int64_t end) {
  int64_t i = end - 1;
  while (i > begin && (s[i] & 0xC0) == 0x80) --i;
  return i;
}

// [b, e) without the code points of class `what` at either end.
inline void trim(const uint8_t* s, int64_t& b, int64_t& e, const uint16_t* cls, uint16_t what) {
  while (b < e) {
    int64_t i = b;
    if (!(cls[decode(s, i, e)] & what)) break;
    b = i;
  }
  while (e > b) {
    int64_t i = previous(s, b, e), j = i;
    if (!(cls[decode(s, j, e)] & what)) break;
    e = i;
  }
}

// Words of s[b, e) as text_rules.words: runs of code points other than white space; in CJK text each
// CJK code point is a word. Calls f(begin, end, characters, the union of its code points' classes) per word.
template <class F>
inline void for_words(const uint8_t* s, int64_t b, int64_t e, bool cjk, const uint16_t* cls, F&& f) {
  int64_t word_begin = -1, chars = 0;
  uint16_t classes = 0;
  for (int64_t i = b; i < e;) {
    int64_t at = i;
    // ASCII, most of the bytes of most documents, without the general decoder's branches.
    uint16_t c = s[i] < 0x80 ? cls[s[i++]] : cls[decode(s, i, e)];
    bool space = c & SPACE, single = cjk && (c & CJK);
    if ((space || single) && word_begin >= 0) {
      f(word_begin, at, chars, classes);
      word_begin = -1;
      chars = 0;
      classes = 0;
    }
    if (single) {
      f(at, i, int64_t{1}, c);
    } else if (!space) {
      if (word_begin < 0) word_begin = at;
      ++chars;
      classes |= c;
    }
  }
  if (word_begin >= 0) f(word_begin, e, chars, classes);
}

// Tokens of text_rules.TREEBANK_TOKEN in s[b, e), counted as pc.count_substring_regex counts them
// (leftmost-first, non-overlapping):
//   [\pL\pN_]+(?:[-.,/][\pL\pN_]+)* | ['’][\pL]+ | \.{2,} | -{2,} | [^\s\pL\pN_]
// Every code point outside \s starts a match, so the count is a scan that skips \s.
inline int64_t treebank_tokens(const uint8_t* s, int64_t b, int64_t e, const uint16_t* cls) {
  int64_t n = 0;
  auto peek = [&](int64_t i, int64_t& next) -> uint32_t {  // code point at i (i < e) and where the next starts
    next = i;
    return decode(s, next, e);
  };
  for (int64_t i = b; i < e;) {
    int64_t next;
    uint32_t c = peek(i, next);
    uint16_t f = cls[c];
    if (f & RE_SPACE) {
      i = next;
      continue;
    }
    ++n;
    i = next;
    if (f & WORD) {
      for (;;) {
        while (i < e && (cls[peek(i, next)] & WORD)) i = next;
        if (i >= e) break;
        uint32_t sep = peek(i, next);
        if (!(sep == '-' || sep == '.' || sep == ',' || sep == '/') || next >= e) break;
        int64_t after;
        if (!(cls[peek(next, after)] & WORD)) break;
        i = after;
      }
    } else if (c == '\'' || c == 0x2019) {
      while (i < e && (cls[peek(i, next)] & LETTER)) i = next;
    } else if (c == '.' || c == '-') {
      while (i < e && s[i] == c) ++i;
    }
  }
  return n;
}

// Sentences of one string as text_rules.sentence_counts: whitespace tokens ending a Latin sentence,
// less titles, initials and abbreviations; plus runs of CJK sentence ends; at least one.
struct SentenceCounter {
  std::vector<int64_t> tb, te;
  std::vector<uint8_t> core;

  bool next_lower(const uint8_t* s, int64_t b, int64_t e, const uint16_t* cls) {
    for (int64_t i = b; i < e;) {
      uint16_t f = cls[decode(s, i, e)];
      if (f & OPENER) continue;
      return f & LOWER_NUM;
    }
    return false;
  }

  // SENTENCE_END_LATIN: [.!?]+['"”)]*$
  static bool latin_end(const uint8_t* s, int64_t b, int64_t e) {
    while (e > b) {
      int64_t i = previous(s, b, e), j = i;
      uint32_t c = decode(s, j, e);
      if (c == '\'' || c == '"' || c == 0x201D || c == ')') {
        e = i;
        continue;
      }
      return c == '.' || c == '!' || c == '?';
    }
    return false;
  }

  int64_t count(const uint8_t* s, int64_t b, int64_t e, const uint16_t* cls, const uint8_t* lower_ascii,
                const Strings& titles, const Strings& abbreviations) {
    tb.clear();
    te.clear();
    int64_t start = -1, cjk = 0;
    bool previous_end = false;
    for (int64_t i = b; i < e;) {
      int64_t at = i;
      uint16_t f = cls[decode(s, i, e)];
      bool end = f & CJK_END;
      cjk += end && !previous_end;  // [。！？]+[”」』）]* matches once per run of sentence ends
      previous_end = end;
      if (f & SPACE) {
        if (start >= 0) {
          tb.push_back(start);
          te.push_back(at);
          start = -1;
        }
      } else if (start < 0) {
        start = at;
      }
    }
    if (start >= 0) {
      tb.push_back(start);
      te.push_back(e);
    }
    int64_t latin = 0;
    const size_t n = tb.size();
    for (size_t k = 0; k < n; ++k) {
      const int64_t x = tb[k], y = te[k];
      if (!latin_end(s, x, y)) continue;
      const bool has_next = k + 1 < n;
      const bool lower = has_next && next_lower(s, tb[k + 1], te[k + 1], cls);
      const bool period = s[y - 1] == '.' && !(y - x >= 2 && s[y - 2] == '.');
      const bool ellipsis = y - x >= 3 && s[y - 1] == '.' && s[y - 2] == '.' && s[y - 3] == '.';
      bool not_end = ellipsis && lower;
      if (!not_end && period && has_next) {
        // core: without leading openers and one final period, lower-cased
        int64_t cb = x, ce = y;
        while (cb < ce) {
          int64_t i = cb;
          if (!(cls[decode(s, i, ce)] & OPENER)) break;
          cb = i;
        }
        if (ce > cb && s[ce - 1] == '.') --ce;
        core.clear();
        int64_t chars = 0, runs = 0, letters_in_run = 0;
        bool ascii = true, shape = true, last_letter = false;
        uint16_t first_flags = 0;
        for (int64_t i = cb; i < ce;) {
          uint32_t c = decode(s, i, ce);
          uint16_t f = cls[c];
          if (chars == 0) first_flags = f;
          ++chars;
          uint8_t a = lower_ascii[c];
          ascii &= a != 0;
          core.push_back(a);
          // ^\pL+(\.\pL+)+$ on the lower-cased core
          if (f & LOWER_LETTER) {
            if (!last_letter) ++runs;
            last_letter = true;
            ++letters_in_run;
          } else if (c == '.' && last_letter) {
            last_letter = false;
          } else {
            shape = false;
          }
        }
        const bool initial = chars == 1 && (first_flags & LOWER_LETTER);
        const bool dotted = shape && last_letter && runs >= 2;
        bool title = false, abbreviation = dotted;
        if (ascii && chars) {
          title = titles.equals(core.data(), 0, static_cast<int64_t>(core.size()));
          abbreviation |= abbreviations.equals(core.data(), 0, static_cast<int64_t>(core.size()));
        }
        not_end = initial || title || (abbreviation && lower);
      }
      latin += !not_end;
    }
    return std::max<int64_t>(latin + cjk, 1);
  }
};

}  // namespace

extern "C" {

// gopher_quality's counts per document (stages/gopher_quality.py), out[doc * 8 + ...]: words, their
// characters, symbols (non-overlapping occurrences of each of `symbols`), non-empty lines, lines starting
// with a bullet and ending with an ellipsis (after trimming), words holding a letter, stop words (of
// `stop_cjk` in CJK documents, else `stop`, byte for byte).
int64_t tr_quality(const uint8_t* data, const int64_t* offsets, int64_t n_docs, const uint8_t* cjk_doc,
                   const uint16_t* cls, const uint8_t* stop_d, const int64_t* stop_o, int64_t stop_n,
                   const uint8_t* cstop_d, const int64_t* cstop_o, int64_t cstop_n, const uint8_t* bullet_d,
                   const int64_t* bullet_o, int64_t bullet_n, const uint8_t* ellipsis_d, const int64_t* ellipsis_o,
                   int64_t ellipsis_n, const uint8_t* symbol_d, const int64_t* symbol_o, int64_t symbol_n,
                   int64_t* out) {
  const Strings bullets{bullet_d, bullet_o, bullet_n}, ellipses{ellipsis_d, ellipsis_o, ellipsis_n};
  const WordSet stop(Strings{stop_d, stop_o, stop_n}), cstop(Strings{cstop_d, cstop_o, cstop_n});
  for (int64_t doc = 0; doc < n_docs; ++doc) {
    const int64_t start = offsets[doc], stop_at = offsets[doc + 1];
    const bool cjk = cjk_doc[doc] != 0;
    const WordSet& stops = cjk ? cstop : stop;
    int64_t* o = out + doc * 8;
    std::fill(o, o + 8, 0);
    for_words(data, start, stop_at, cjk, cls, [&](int64_t b, int64_t e, int64_t chars, uint16_t classes) {
      ++o[0];
      o[1] += chars;
      o[6] += (classes & LETTER) != 0;
      o[7] += stops.has(data, b, e);
    });
    for (int64_t k = 0; k < symbol_n; ++k) {
      o[2] += count_substring(data, start, stop_at, symbol_d + symbol_o[k], symbol_o[k + 1] - symbol_o[k]);
    }
    for (int64_t piece = start;;) {
      const void* newline = std::memchr(data + piece, '\n', static_cast<size_t>(stop_at - piece));
      const int64_t end = newline ? static_cast<const uint8_t*>(newline) - data : stop_at;
      int64_t b = piece, e = end;
      trim(data, b, e, cls, TRIM);
      o[3] += e > b;
      o[4] += bullets.starts(data, b, e);
      o[5] += ellipses.ends(data, b, e);
      if (end >= stop_at) break;
      piece = end + 1;
    }
  }
  return n_docs;
}

// fineweb's counts per document (stages/fineweb.py), out[doc * 7 + ...]: newlines, characters,
// non-blank lines, those ending in one of `terminal`, those of at most `short_len` (`short_len_cjk`)
// characters, characters of non-blank lines equal to an earlier one, words (Treebank-like tokens, or
// text_rules.words in CJK documents).
int64_t tr_fineweb(const uint8_t* data, const int64_t* offsets, int64_t n_docs, const uint8_t* cjk_doc,
                   const uint16_t* cls, const uint8_t* term_d, const int64_t* term_o, int64_t term_n,
                   int64_t short_len, int64_t short_len_cjk, int64_t* out) {
  const Strings terminal{term_d, term_o, term_n};
  Table table;
  std::vector<int64_t> lb, le, seen_b, seen_e;
  for (int64_t doc = 0; doc < n_docs; ++doc) {
    const int64_t start = offsets[doc], stop = offsets[doc + 1];
    const bool cjk = cjk_doc[doc] != 0;
    const int64_t limit = cjk ? short_len_cjk : short_len;
    int64_t* o = out + doc * 7;
    std::fill(o, o + 7, 0);
    o[1] = code_points(data, start, stop);
    lb.clear();
    le.clear();
    for (int64_t piece = start;;) {
      int64_t end = piece;
      while (end < stop && data[end] != '\n') ++end;
      int64_t b = piece, e = end;
      trim(data, b, e, cls, TRIM);
      if (e > b) {
        lb.push_back(piece);
        le.push_back(end);
      }
      if (end >= stop) break;
      ++o[0];
      piece = end + 1;
    }
    table.reset(lb.size());
    seen_b.clear();
    seen_e.clear();
    for (size_t k = 0; k < lb.size(); ++k) {
      const int64_t b = lb[k], e = le[k], chars = code_points(data, b, e);
      ++o[2];
      o[3] += terminal.ends(data, b, e);
      o[4] += chars <= limit;
      uint64_t h = hash_bytes(data + b, e - b);
      uint64_t at = h & table.mask;
      bool seen = false;
      while (table.slot[at] >= 0) {
        int32_t j = table.slot[at];
        if (table.key[at] == h && seen_e[j] - seen_b[j] == e - b &&
            std::memcmp(data + seen_b[j], data + b, static_cast<size_t>(e - b)) == 0) {
          seen = true;
          break;
        }
        at = (at + 1) & table.mask;
      }
      if (seen) {
        o[5] += chars;
      } else {
        table.key[at] = h;
        table.slot[at] = static_cast<int32_t>(seen_b.size());
        seen_b.push_back(b);
        seen_e.push_back(e);
      }
    }
    if (cjk) {
      for_words(data, start, stop, true, cls, [&](int64_t, int64_t, int64_t, uint16_t) { ++o[6]; });
    } else {
      o[6] = treebank_tokens(data, start, stop, cls);
    }
  }
  return n_docs;
}

// c4's line and document rules (stages/c4.py) in one pass. Per line (split on "\n", trimmed): the
// first of too_long_word (1), no_terminal_punct (2), too_few_words (3), javascript (4), policy (5), or
// kept (0), counted per document in line_out[doc * 6 + reason]. Per document, doc_out: 0 kept,
// 1 lorem_ipsum, 2 curly_bracket, 3 min_sentences. text_out/text_offsets: the kept lines (citations cut,
// a CJK line's unterminated tail cut) joined by "\n" where the document stays, its text where it goes;
// never longer than the input, so text_out needs the input's size. Options of -1 are off (None).
int64_t tr_c4(const uint8_t* data, const int64_t* offsets, int64_t n_docs, const uint8_t* cjk_doc,
              const uint16_t* cls, const uint8_t* lower_ascii, const uint8_t* term_d, const int64_t* term_o,
              int64_t term_n, const uint8_t* policy_d, const int64_t* policy_o, int64_t policy_n,
              const uint8_t* title_d, const int64_t* title_o, int64_t title_n, const uint8_t* abbr_d,
              const int64_t* abbr_o, int64_t abbr_n, const uint8_t* phrase_d, const int64_t* phrase_o,
              int64_t remove_citations, int64_t no_terminal_punct, int64_t min_words, int64_t max_word_length,
              int64_t javascript, int64_t lorem, int64_t curly, int64_t curly_kept_lines, int64_t min_sentences,
              int64_t min_sentences_cjk, int64_t* line_out, int64_t* doc_out, uint8_t* text_out,
              int64_t* text_offsets) {
  const Strings terminal{term_d, term_o, term_n}, titles{title_d, title_o, title_n},
      abbreviations{abbr_d, abbr_o, abbr_n};
  // phrase 0: "lorem ipsum", 1: "javascript", 2: "...", 3: "{"
  auto phrase = [&](int k) { return std::make_pair(phrase_d + phrase_o[k], phrase_o[k + 1] - phrase_o[k]); };
  SentenceCounter sentences;
  std::vector<uint8_t> line, low;
  int64_t cursor = 0;
  text_offsets[0] = 0;
  for (int64_t doc = 0; doc < n_docs; ++doc) {
    const int64_t start = offsets[doc], stop = offsets[doc + 1];
    const bool cjk = cjk_doc[doc] != 0;
    int64_t* counts = line_out + doc * 6;
    std::fill(counts, counts + 6, 0);
    bool lorem_hit = false, curly_hit = false, first_kept = true;
    int64_t doc_sentences = 0;
    const int64_t doc_begin = cursor;
    for (int64_t piece = start;;) {
      int64_t end = piece;
      while (end < stop && data[end] != '\n') ++end;
      int64_t b = piece, e = end;
      trim(data, b, e, cls, TRIM);
      int64_t words = 0, longest = 0;
      for_words(data, b, e, cjk, cls, [&](int64_t, int64_t, int64_t chars, uint16_t) {
        ++words;
        longest = std::max(longest, chars);
      });
      int reason = 0;
      if (max_word_length >= 0 && longest > max_word_length) reason = 1;
      // The line as c4.py rewrites it: citations \[\d*\]|\[edit\]|\[citation needed\] cut (RE2's \d is ASCII)...
      line.clear();
      for (int64_t i = b; i < e;) {
        if (remove_citations && data[i] == '[') {
          int64_t j = i + 1;
          while (j < e && data[j] >= '0' && data[j] <= '9') ++j;
          if (j < e && data[j] == ']') {
            i = j + 1;
            continue;
          }
          static const char* words_[] = {"[edit]", "[citation needed]"};
          bool cut = false;
          for (const char* w : words_) {
            int64_t m = static_cast<int64_t>(std::strlen(w));
            if (e - i >= m && std::memcmp(data + i, w, static_cast<size_t>(m)) == 0) {
              i += m;
              cut = true;
              break;
            }
          }
          if (cut) continue;
        }
        line.push_back(data[i++]);
      }
      const uint8_t* s = line.data();
      int64_t n = static_cast<int64_t>(line.size());
      // ...and in CJK text the tail after the last sentence end, CJK_TRAILING_FRAGMENT
      // ([。！？][”」』）]*)[^。！？]+$ -> \1: the closers kept are all but the last code point.
      if (no_terminal_punct && cjk) {
        int64_t q = -1;  // where the last sentence end finishes
        for (int64_t i = 0; i < n;) {
          if (cls[decode(s, i, n)] & CJK_END) q = i;
        }
        if (q >= 0 && q < n) {
          const int64_t rest = code_points(s, q, n);
          int64_t keep = q, closers = 0;
          for (int64_t i = q; i < n && closers < rest - 1;) {
            if (!(cls[decode(s, i, n)] & CJK_CLOSE)) break;
            keep = i;
            ++closers;
          }
          n = keep;
        }
      }
      if (no_terminal_punct && reason == 0) {
        auto [p, m] = phrase(2);
        bool ellipsis = n >= m && std::memcmp(s + n - m, p, static_cast<size_t>(m)) == 0;
        if (!terminal.ends(s, 0, n) || ellipsis) reason = 2;
      }
      if (min_words >= 0 && reason == 0 && words < min_words) reason = 3;
      // Lower case as ASCII bytes (other code points as 0x80, which no ASCII phrase contains).
      low.clear();
      for (int64_t i = 0; i < n;) {
        uint8_t a = lower_ascii[decode(s, i, n)];
        low.push_back(a ? a : 0x80);
      }
      auto has = [&](const std::vector<uint8_t>& v, const uint8_t* p, int64_t m) {
        return count_substring(v.data(), 0, static_cast<int64_t>(v.size()), p, m) > 0;
      };
      if (lorem && reason == 0) {
        auto [p, m] = phrase(0);
        lorem_hit |= has(low, p, m);
      }
      if (javascript && reason == 0) {
        auto [p, m] = phrase(1);
        if (has(low, p, m)) reason = 4;
      }
      if (curly && !(curly_kept_lines && reason != 0)) {
        auto [p, m] = phrase(3);
        curly_hit |= count_substring(s, 0, n, p, m) > 0;
      }
      if (policy_n && reason == 0) {
        for (int64_t k = 0; k < policy_n && reason == 0; ++k) {
          if (has(low, policy_d + policy_o[k], policy_o[k + 1] - policy_o[k])) reason = 5;
        }
      }
      ++counts[reason];
      if (reason == 0) {
        doc_sentences += sentences.count(s, 0, n, cls, lower_ascii, titles, abbreviations);
        if (!first_kept) text_out[cursor++] = '\n';
        first_kept = false;
        std::memcpy(text_out + cursor, s, static_cast<size_t>(n));
        cursor += n;
      }
      if (end >= stop) break;
      piece = end + 1;
    }
    int64_t why = 0;
    const int64_t needed = cjk ? min_sentences_cjk : min_sentences;
    if (lorem_hit) {
      why = 1;
    } else if (curly_hit) {
      why = 2;
    } else if (min_sentences >= 0 && doc_sentences < needed) {
      why = 3;
    }
    doc_out[doc] = why;
    if (why != 0) {  // a dropped document keeps its text
      cursor = doc_begin;
      std::memcpy(text_out + cursor, data + start, static_cast<size_t>(stop - start));
      cursor += stop - start;
    }
    text_offsets[doc + 1] = cursor;
  }
  return n_docs;
}

// Gopher repetition measures of every document (Rae et al. 2021, table A1), the definitions of
// stages/text_rules.py:
//   span_out[doc * 7 + ...]: characters, paragraphs, duplicate paragraphs, their characters, lines,
//     duplicate lines, their characters. Lines split on "\n"; paragraphs on runs of two or more "\n"
//     after trimming the document; blank ones are not counted.
//   top_out / dup_out[doc * n_sizes + k]: for n = sizes[k] (times cjk_scale in CJK documents) the
//     top n-gram's characters times its count (`top_mode` 0: the n-gram with most characters times
//     count, among those seen twice or more; 1: the most frequent n-gram, ties to the one seen first,
//     when seen twice or more), and the characters of words covered by repeated n-grams.
// Words are runs of non-space code points; in CJK documents each CJK code point is a word of its own.
// An n-gram's characters are its words' plus one space between words (none in CJK documents).
int64_t tr_repetition(const uint8_t* data, const int64_t* offsets, int64_t n_docs, const uint8_t* cjk_doc,
                      const uint8_t* flags, const int32_t* sizes, int64_t n_sizes, int32_t cjk_scale, int32_t top_mode,
                      int64_t* span_out, int64_t* top_out, int64_t* dup_out) {
  SpanCounter spans;
  std::vector<int64_t> b, e;
  std::vector<uint64_t> word_hash, gram;
  std::vector<int64_t> cumulative;
  Table table;
  std::vector<int64_t> entry_count, entry_chars;
  std::vector<int32_t> doc_sizes(static_cast<size_t>(n_sizes));

  for (int64_t doc = 0; doc < n_docs; ++doc) {
    const int64_t start = offsets[doc], stop = offsets[doc + 1];
    const bool cjk = cjk_doc[doc] != 0;
    int64_t* span = span_out + doc * 7;
    span[0] = code_points(data, start, stop);

    // Paragraphs: trim the document's white space, split on runs of two or more newlines.
    int64_t first = -1, last = start;
    for (int64_t i = start; i < stop;) {
      int64_t at = i;
      if (!(flags[decode(data, i, stop)] & SPACE)) {
        if (first < 0) first = at;
        last = i;
      }
    }
    if (first < 0) first = last = start;
    b.clear();
    e.clear();
    int64_t piece = first;
    for (int64_t i = first; i < last;) {
      if (data[i] != '\n') {
        ++i;
        continue;
      }
      int64_t run = i;
      while (run < last && data[run] == '\n') ++run;
      if (run - i >= 2) {
        b.push_back(piece);
        e.push_back(i);
        piece = run;
      }
      i = run;
    }
    b.push_back(piece);
    e.push_back(last);
    spans.count(data, b, e, flags, span + 1);

    // Lines: split on every newline.
    b.clear();
    e.clear();
    piece = start;
    for (int64_t i = start; i < stop; ++i) {
      if (data[i] == '\n') {
        b.push_back(piece);
        e.push_back(i);
        piece = i + 1;
      }
    }
    b.push_back(piece);
    e.push_back(stop);
    spans.count(data, b, e, flags, span + 4);

    // Words.
    word_hash.clear();
    cumulative.assign(1, 0);
    int64_t word_begin = -1, word_chars = 0;
    for (int64_t i = start; i < stop;) {
      int64_t at = i;
      uint32_t c = decode(data, i, stop);
      uint8_t f = flags[c];
      bool space = f & SPACE, single = cjk && (f & CJK);
      if ((space || single) && word_begin >= 0) {
        word_hash.push_back(hash_bytes(data + word_begin, at - word_begin));
        cumulative.push_back(cumulative.back() + word_chars);
        word_begin = -1;
        word_chars = 0;
      }
      if (single) {
        word_hash.push_back(hash_bytes(data + at, i - at));
        cumulative.push_back(cumulative.back() + 1);
      } else if (!space) {
        if (word_begin < 0) word_begin = at;
        ++word_chars;
      }
    }
    if (word_begin >= 0) {
      word_hash.push_back(hash_bytes(data + word_begin, stop - word_begin));
      cumulative.push_back(cumulative.back() + word_chars);
    }

    // N-grams: hashes grow one word at a time; each wanted n is counted in a hash table.
    const int64_t words = static_cast<int64_t>(word_hash.size());
    const int64_t joiner = cjk ? 0 : 1;
    int32_t max_n = 0;
    for (int64_t k = 0; k < n_sizes; ++k) {
      doc_sizes[k] = sizes[k] * (cjk ? cjk_scale : 1);
      max_n = std::max(max_n, doc_sizes[k]);
      top_out[doc * n_sizes + k] = 0;
      dup_out[doc * n_sizes + k] = 0;
    }
    gram.assign(word_hash.size(), 0);
    for (int32_t n = 1; n <= max_n && n <= words; ++n) {
      const int64_t m = words - n + 1;
      const uint64_t salt = static_cast<uint64_t>(n) * 0x9E3779B97F4A7C15ULL;
      for (int64_t i = 0; i < m; ++i) {
        uint64_t h = (gram[i] ^ (word_hash[i + n - 1] + salt)) * 0xBF58476D1CE4E5B9ULL;
        gram[i] = h ^ (h >> 29);
      }
      bool wanted = false;
      for (int64_t k = 0; k < n_sizes; ++k) wanted |= doc_sizes[k] == n;
      if (!wanted) continue;

      table.reset(static_cast<size_t>(m));
      entry_count.clear();
      entry_chars.clear();
      int64_t duplicate_chars = 0, cover_end = 0;
      for (int64_t i = 0; i < m; ++i) {
        uint64_t h = gram[i];
        uint64_t at = fmix(h) & table.mask;
        int32_t found = -1;
        while (table.slot[at] >= 0) {
          if (table.key[at] == h) {
            found = table.slot[at];
            break;
          }
          at = (at + 1) & table.mask;
        }
        if (found >= 0) {
          ++entry_count[found];
          // Words covered by a repeated occurrence, each word once.
          int64_t from = std::max(i, cover_end);
          if (i + n > from) duplicate_chars += cumulative[i + n] - cumulative[from];
          cover_end = std::max(cover_end, i + n);
        } else {
          table.key[at] = h;
          table.slot[at] = static_cast<int32_t>(entry_count.size());
          entry_count.push_back(1);
          entry_chars.push_back(cumulative[i + n] - cumulative[i] + (n - 1) * joiner);
        }
      }
      int64_t top = 0;
      if (top_mode == 0) {
        for (size_t j = 0; j < entry_count.size(); ++j) {
          if (entry_count[j] > 1) top = std::max(top, entry_count[j] * entry_chars[j]);
        }
      } else {
        int64_t best = 1;  // entries are in order of first occurrence: the first of the most frequent wins
        for (size_t j = 0; j < entry_count.size(); ++j) {
          if (entry_count[j] > best) {
            best = entry_count[j];
            top = entry_count[j] * entry_chars[j];
          }
        }
      }
      for (int64_t k = 0; k < n_sizes; ++k) {
        if (doc_sizes[k] == n) {
          top_out[doc * n_sizes + k] = top;
          dup_out[doc * n_sizes + k] = duplicate_chars;
        }
      }
    }
  }
  return n_docs;
}

}  // extern "C"
