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

}  // namespace

extern "C" {

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
