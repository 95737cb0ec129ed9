// Batch KenLM scorer for the `quality` stage: normalises and scores a whole Arrow string array of
// documents in one call, so that the per-line and per-word Python work of `kenlm.Model.score` (one
// call per line, a Python bytes object per word) and the separate normalisation passes over the text
// disappear. Built by scripts/build_kenlm.sh against the same KenLM source as `lmplz`, loaded with
// ctypes (which releases the GIL for the call).
//
// The normalisation is `curation.stages.lm_text.normalise` + `lines` done on the fly, one code point
// at a time: lower-case, `<s>` `</s>` `<unk>` removed, digits folded to 0, ASCII and Unicode
// punctuation (and CJK characters for character models) split off as tokens, lines split on '\n',
// blank lines dropped. The Unicode facts (lower-case mapping, which code points are white space,
// punctuation or CJK) come from Python as tables computed with the same Arrow functions the Python
// normalisation uses, so the two agree by construction (tests/test_quality_native.py checks it on all
// of ../shared/data).
#include "lm/model.hh"
#include "lm/binary_format.hh"
#include "util/string_piece.hh"

#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

enum Flag : uint8_t { kSpace = 1, kPunct = 2, kCjk = 4 };

// ASCII classes, one table lookup per byte: white space as KenLM splits a sentence (util/spaces.cc,
// and Python's bytes.split()), the punctuation `lm_text` splits off, digits 1-9 (folded to 0).
enum AsciiClass : uint8_t { kKenlmSpace = 1, kAsciiPunct = 2, kDigit = 4 };

struct AsciiTables {
  uint8_t cls[128];
  unsigned char lower[128];
  AsciiTables() {
    for (int c = 0; c < 128; ++c) {
      cls[c] = 0;
      lower[c] = static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    for (int c : {' ', '\t', '\n', '\r', '\v', '\f'}) cls[c] |= kKenlmSpace;
    for (const char *p = ".,!?;:\"()[]{}<>|/*=+#&%$@~^_`\\"; *p; ++p) cls[static_cast<unsigned char>(*p)] |= kAsciiPunct;
    for (int c = '1'; c <= '9'; ++c) cls[c] |= kDigit;
  }
};
const AsciiTables kAscii;

struct Tables {
  const uint8_t *flags;  // 0x110000 entries
  const int32_t *lower;  // lower[c] for c < lower_len; identity above
  int64_t lower_len;
  bool cjk;
};

// One UTF-8 code point at s[i] (i < n): its value and length. Invalid bytes stand for themselves
// (value 0xFFFFFFFF, length 1) and are kept inside words, as the Python side keeps them.
inline uint32_t Decode(const unsigned char *s, int64_t n, int64_t i, int *len) {
  unsigned char b = s[i];
  if (b < 0x80) { *len = 1; return b; }
  int need = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : -1;
  if (need < 0 || i + need >= n) { *len = 1; return 0xFFFFFFFFu; }
  uint32_t c = b & (0x3F >> need);
  for (int k = 1; k <= need; ++k) {
    unsigned char t = s[i + k];
    if ((t & 0xC0) != 0x80) { *len = 1; return 0xFFFFFFFFu; }
    c = (c << 6) | (t & 0x3F);
  }
  *len = need + 1;
  return c;
}

inline char *Encode(uint32_t c, char *w) {
  if (c < 0x80) { *w++ = static_cast<char>(c); return w; }
  if (c < 0x800) { *w++ = static_cast<char>(0xC0 | (c >> 6)); }
  else if (c < 0x10000) { *w++ = static_cast<char>(0xE0 | (c >> 12)); *w++ = static_cast<char>(0x80 | ((c >> 6) & 0x3F)); }
  else { *w++ = static_cast<char>(0xF0 | (c >> 18)); *w++ = static_cast<char>(0x80 | ((c >> 12) & 0x3F)); *w++ = static_cast<char>(0x80 | ((c >> 6) & 0x3F)); }
  *w++ = static_cast<char>(0x80 | (c & 0x3F));
  return w;
}

// A document lower-cased into `out` (ASCII fast path), then `</?s>|<unk>` replaced by a space, as the
// Python side does on the lower-cased text.
void LowerDocument(const unsigned char *s, int64_t n, const Tables &t, std::string *out) {
  // lower-casing can lengthen a character by one byte (U+023A -> U+2C65): room for 1.5x
  out->resize(static_cast<size_t>(n + n / 2 + 8));
  char *w = &(*out)[0];
  bool has_angle = false;
  for (int64_t i = 0; i < n;) {
    unsigned char b = s[i];
    if (b < 0x80) {
      do {  // a run of ASCII
        *w++ = static_cast<char>(kAscii.lower[b]);
        has_angle |= b == '<';
        ++i;
      } while (i < n && (b = s[i]) < 0x80);
      continue;
    }
    int len;
    uint32_t c = Decode(s, n, i, &len);
    uint32_t lowered = c != 0xFFFFFFFFu && static_cast<int64_t>(c) < t.lower_len ? static_cast<uint32_t>(t.lower[c]) : c;
    if (lowered == c) {
      std::memcpy(w, s + i, len);
      w += len;
    } else {
      w = Encode(lowered, w);
      has_angle |= lowered == '<';
    }
    i += len;
  }
  out->resize(static_cast<size_t>(w - out->data()));
  if (!has_angle) return;
  std::string &text = *out;
  size_t kept = 0;
  for (size_t r = 0; r < text.size();) {
    if (text[r] == '<') {
      size_t skip = 0;
      if (text.compare(r, 3, "<s>") == 0) skip = 3;
      else if (text.compare(r, 4, "</s>") == 0) skip = 4;
      else if (text.compare(r, 5, "<unk>") == 0) skip = 5;
      if (skip) { text[kept++] = ' '; r += skip; continue; }
    }
    text[kept++] = text[r++];
  }
  text.resize(kept);
}

// Calls on_line(tokens) for every non-blank line of a lower-cased document; tokens are
// (pointer, length) pairs into `text` (digits folded there).
template <class OnLine>
void Lines(std::string &text, const Tables &t, std::vector<StringPiece> *tokens, OnLine on_line) {
  const unsigned char *s = reinterpret_cast<const unsigned char *>(text.data());
  const int64_t n = static_cast<int64_t>(text.size());
  char *w = &text[0];
  int64_t i = 0;
  while (i <= n) {
    tokens->clear();
    bool blank = true;
    int64_t start = -1;  // start of the current word in text
    for (; i < n;) {
      unsigned char b = s[i];
      int len = 1;
      bool space, split;
      if (b < 0x80) {
        if (b == '\n') break;
        uint8_t cls = kAscii.cls[b];
        if (cls == 0) {  // the common case: a word of ASCII letters, run through in one loop
          if (start < 0) start = i;
          do {
            blank = blank && (t.flags[s[i]] & kSpace);
            ++i;
          } while (i < n && s[i] < 0x80 && kAscii.cls[s[i]] == 0);
          continue;
        }
        space = cls & kKenlmSpace;
        split = cls & kAsciiPunct;
        if (cls & kDigit) w[i] = '0';
        blank = blank && (t.flags[b] & kSpace);
      } else {
        uint32_t c = Decode(s, n, i, &len);
        space = false;
        if (c == 0xFFFFFFFFu) {
          split = blank = false;
        } else {
          uint8_t f = t.flags[c];
          split = (f & kPunct) || (t.cjk && (f & kCjk));
          blank = blank && (f & kSpace);
        }
      }
      if (space || split) {
        if (start >= 0) { tokens->emplace_back(w + start, i - start); start = -1; }
        if (split) tokens->emplace_back(w + i, len);
      } else if (start < 0) {
        start = i;
      }
      i += len;
    }
    if (start >= 0) tokens->emplace_back(w + start, i - start);
    if (!blank) on_line(*tokens);
    ++i;  // past '\n' (or past the end)
  }
}

struct Scorer {
  lm::base::Model *model = nullptr;
  lm::ngram::ProbingModel *probing = nullptr;  // the common case, scored without virtual calls
  std::vector<double> unigram;                  // log10 p by KenLM word index ([0]: out of vocabulary)
  double unigram_eos = 0;
  bool has_unigrams = false;
  ~Scorer() { delete model; }
};

template <class Model>
inline float LineScore(const Model &model, const std::vector<StringPiece> &tokens, const Scorer &scorer,
                       std::vector<lm::WordIndex> *words, double *unigram) {
  const auto &vocab = model.GetVocabulary();
  // The line's word ids first: the vocabulary lookups are independent of each other, so their
  // memory accesses overlap, where interleaved with the scoring each would wait on the one before.
  words->resize(tokens.size());
  for (size_t k = 0; k < tokens.size(); ++k) (*words)[k] = vocab.Index(tokens[k]);
  lm::ngram::State state = model.BeginSentenceState(), out;
  float total = 0;
  double uni = scorer.unigram_eos;
  for (lm::WordIndex word : *words) {
    total += model.Score(state, word, out);
    state = out;
    if (scorer.has_unigrams) uni += word < scorer.unigram.size() ? scorer.unigram[word] : scorer.unigram[0];
  }
  total += model.Score(state, vocab.EndSentence(), out);
  *unigram = uni;
  return total;
}

// Generic model types (trie, quantised) through KenLM's virtual interface.
struct VirtualModel {
  const lm::base::Model &m;
  const lm::base::Vocabulary &GetVocabulary() const { return m.BaseVocabulary(); }
  lm::ngram::State BeginSentenceState() const { lm::ngram::State s; m.BeginSentenceWrite(&s); return s; }
  float Score(const lm::ngram::State &in, lm::WordIndex w, lm::ngram::State &out) const { return m.BaseScore(&in, w, &out); }
};

template <class Model>
int64_t ScoreAll(const Model &model, const Scorer &scorer, const char *data, const int64_t *offsets, int64_t n_docs,
                 const Tables &t, double *doc_logprob, double *doc_words, double *doc_unigram,
                 double *line_logprob, int32_t *line_words, int64_t *line_doc, int64_t line_capacity) {
  std::string text;
  std::vector<StringPiece> tokens;
  std::vector<lm::WordIndex> words;
  int64_t lines = 0;
  bool overflow = false;
  for (int64_t d = 0; d < n_docs; ++d) {
    LowerDocument(reinterpret_cast<const unsigned char *>(data + offsets[d]), offsets[d + 1] - offsets[d], t, &text);
    double lp = 0, n_tokens = 0, uni = 0;
    Lines(text, t, &tokens, [&](const std::vector<StringPiece> &line) {
      double line_uni;
      float score = LineScore(model, line, scorer, &words, &line_uni);
      lp += score;
      n_tokens += static_cast<double>(line.size() + 1);
      uni += line_uni;
      if (line_logprob != nullptr) {
        if (lines >= line_capacity) { overflow = true; return; }
        line_logprob[lines] = score;
        line_words[lines] = static_cast<int32_t>(line.size() + 1);
        line_doc[lines] = d;
      }
      ++lines;
    });
    doc_logprob[d] = lp;
    doc_words[d] = n_tokens;
    doc_unigram[d] = uni;
  }
  return overflow ? -1 : lines;
}

}  // namespace

extern "C" {

// A loaded model, or null with the reason in `error`.
void *ks_load(const char *path, char *error, int64_t error_len) {
  try {
    lm::ngram::Config config;
    config.messages = nullptr;
    // Memory-mapped (KenLM's default): the actors of a machine share the model in the page cache.
    // (util::READ, a private copy, measured no faster here.)
    lm::ngram::ModelType type;
    if (!lm::ngram::RecognizeBinary(path, type)) throw std::runtime_error("not a KenLM binary model");
    auto *scorer = new Scorer();
    if (type == lm::ngram::PROBING) {
      scorer->probing = new lm::ngram::ProbingModel(path, config);
      scorer->model = scorer->probing;
    } else {
      scorer->model = lm::ngram::LoadVirtual(path, config);
    }
    return scorer;
  } catch (const std::exception &e) {
    std::strncpy(error, e.what(), static_cast<size_t>(error_len - 1));
    error[error_len - 1] = 0;
    return nullptr;
  }
}

void ks_free(void *handle) { delete static_cast<Scorer *>(handle); }

// Unigram log10 probabilities (the lm_score baseline), keyed by word: stored by KenLM word index.
// Words KenLM does not know score `oov`, as `<unk>` does.
void ks_set_unigrams(void *handle, const char *data, const int64_t *offsets, int64_t n, const double *log10p,
                     double oov, double eos) {
  auto *scorer = static_cast<Scorer *>(handle);
  const lm::base::Vocabulary &vocab = scorer->model->BaseVocabulary();
  scorer->unigram.assign(1, oov);
  for (int64_t i = 0; i < n; ++i) {
    lm::WordIndex word = vocab.Index(StringPiece(data + offsets[i], offsets[i + 1] - offsets[i]));
    if (word == vocab.NotFound()) continue;
    if (word >= scorer->unigram.size()) scorer->unigram.resize(word + 1, oov);
    scorer->unigram[word] = log10p[i];
  }
  scorer->unigram[vocab.NotFound()] = oov;
  scorer->unigram_eos = eos;
  scorer->has_unigrams = true;
}

// Scores documents data[offsets[d]:offsets[d + 1]] (raw UTF-8 text, normalised here). Per document:
// log10 probability, tokens (+ </s> per line) and the unigram baseline. Per line, when line_logprob
// is given: log10 probability, tokens + 1 and document index. Returns the number of lines, or -1
// when line_capacity was too small.
int64_t ks_score(void *handle, const char *data, const int64_t *offsets, int64_t n_docs, const uint8_t *flags,
                 const int32_t *lower, int64_t lower_len, int32_t cjk, double *doc_logprob, double *doc_words,
                 double *doc_unigram, double *line_logprob, int32_t *line_words, int64_t *line_doc, int64_t line_capacity) {
  auto *scorer = static_cast<Scorer *>(handle);
  Tables t{flags, lower, lower_len, cjk != 0};
  if (scorer->probing != nullptr)
    return ScoreAll(*scorer->probing, *scorer, data, offsets, n_docs, t, doc_logprob, doc_words, doc_unigram,
                    line_logprob, line_words, line_doc, line_capacity);
  VirtualModel model{*scorer->model};
  return ScoreAll(model, *scorer, data, offsets, n_docs, t, doc_logprob, doc_words, doc_unigram, line_logprob,
                  line_words, line_doc, line_capacity);
}

// The normalised text itself (tokens joined by one space, non-blank lines by '\n'), for tests that
// hold it against the Python normalisation. Returns the bytes written, or -1 when out_capacity is short.
int64_t ks_normalise(const char *data, const int64_t *offsets, int64_t n_docs, const uint8_t *flags, const int32_t *lower,
                     int64_t lower_len, int32_t cjk, char *out, int64_t out_capacity, int64_t *out_offsets) {
  Tables t{flags, lower, lower_len, cjk != 0};
  std::string text, doc;
  std::vector<StringPiece> tokens;
  int64_t written = 0;
  out_offsets[0] = 0;
  for (int64_t d = 0; d < n_docs; ++d) {
    LowerDocument(reinterpret_cast<const unsigned char *>(data + offsets[d]), offsets[d + 1] - offsets[d], t, &text);
    doc.clear();
    Lines(text, t, &tokens, [&](const std::vector<StringPiece> &line) {
      if (!doc.empty()) doc.push_back('\n');
      for (size_t k = 0; k < line.size(); ++k) {
        if (k) doc.push_back(' ');
        doc.append(line[k].data(), line[k].size());
      }
    });
    if (written + static_cast<int64_t>(doc.size()) > out_capacity) return -1;
    std::memcpy(out + written, doc.data(), doc.size());
    written += static_cast<int64_t>(doc.size());
    out_offsets[d + 1] = written;
  }
  return written;
}

}  // extern "C"
