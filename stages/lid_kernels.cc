// The `lid` stage's fastText predict over a whole Arrow string array, with a cache of each word's input ids.
//
// What pybind's multilinePredict(lines, k, 0.0) spends its time on is not the model: for every line it
// builds a std::string and an istringstream, reads the line byte by byte (Dictionary::readWord), and for
// every word hashes each of its character n-grams (minn 2 .. maxn 4, FNV-1a) and looks them up in the
// pruned n-gram table. Words repeat, so here the id list fastText makes for a word is computed once (by
// the same steps as getLine: Subwords below, without its allocations) and kept in a bounded cache. The
// row sums, the hierarchical-softmax search and the exp are then fastText's own code (FastText::predict)
// on the same id list in the same order, so the floats are the same bits: tests/test_lid_native.py
// compares labels and float32 scores with the pybind path on every document of ../shared/data. On the
// 56 MB bench corpus the lid stage went from 8.4 to 2.5 CPU-seconds (curation run, executor local).
//
// Why the id lists of single words concatenate to the line's: Dictionary::getLine appends each token's
// ids in order (addSubwords), and its word n-grams (addWordNgrams) add nothing when wordNgrams is 1
// (lid.176); lid_load refuses another model. A token "</s>" (fastText's end of sentence) ends the line
// there, as getLine's break does.
//
// The line is the one lid.py used to build in Arrow: the first max_chars code points of the document
// (pc.utf8_slice_codeunits), with every run of \r \n \t \v \f U+0085 U+2028 U+2029 made one space
// (pc.replace_substring_regex). Tokens are then what readWord splits on: space, \n \r \t \v \f and NUL;
// no '\n' is left to become an end-of-sentence token, and pybind's multilinePredict appends none.
//
// fastText's sources come from its PyPI sdist, fetched by scripts/build_kenlm.sh at setup and compiled
// with this file: its setup.py's flags without -march=native, and -ffp-contract=off (no FMA), as the
// installed module was built (GCC 12.2, baseline x86-64: no VEX or FMA instructions in its .so).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fasttext.h"

namespace {

// Cache bounds. A worker's cache is cleared whole when one is reached, so its memory never grows with the
// corpus: at most 1 MiB of slots (32K words), 512 KiB of word bytes and 4 MiB of ids. On the 56 MB
// bench corpus (../shared/data: 75 languages, 0.7M distinct words in 3.5M) 2^15 slots ran 4% faster
// and 2^19 4% slower than 2^17 (A/B in one process), the hit rate 72% at 2^15, 75% at 2^16, 77% at
// 2^17, 80% unbounded: the misses are mostly words seen once. Text in fewer languages repeats more,
// hence not the smallest.
constexpr uint32_t kSlots = 1u << 16;  // open addressing, load <= 1/2
constexpr uint32_t kMaxEntries = kSlots / 2;
constexpr size_t kMaxKeyBytes = 512u << 10;
constexpr size_t kMaxIds = 1u << 20;
constexpr size_t kMaxCachedWord = 64;  // longer words are computed each time: 1.9% of the bench corpus's
                                       // words, nearly all Chinese or Japanese sentences without spaces

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  }
  h ^= h >> 29;
  return h;
}

// The protected members of fastText's Dictionary that its word -> ids path reads (pointers to members
// named through a derived class; nothing is copied or changed).
struct DictionaryAccess : fasttext::Dictionary {
  static const std::unordered_map<int32_t, int32_t>& pruneidx(const fasttext::Dictionary& d) {
    return d.*(&DictionaryAccess::pruneidx_);
  }
  static int64_t pruneidx_size(const fasttext::Dictionary& d) { return d.*(&DictionaryAccess::pruneidx_size_); }
};

// The ids Dictionary::getLine appends for one token (its getId, getType, addSubwords, computeSubwords and
// pushHash, step for step), without its allocations: computeSubwords builds a std::string per n-gram and
// hashes it from the start, and pushHash looks the bucket up in a std::unordered_map (35% of the time
// with them). Here each n-gram's FNV-1a extends the shorter one's (the hash is sequential), the modulo is
// Lemire's exact fastmod, and the pruned buckets (42,765 of lid.176's 2,000,000) are a bitmap with a
// rank per 64 buckets (250 + 125 KiB, mostly in L2) and their ids in bucket order: one load says absent,
// three give the id. A hash table of them (2 MiB) spent half of this function's time waiting on its
// loads; the bitmap made the whole predict 20% faster (A/B in one process).
class Subwords {
 public:
  Subwords(const fasttext::Dictionary& dict, const fasttext::Args& args)
      : dict_(dict), nwords_(dict.nwords()), minn_(args.minn), maxn_(args.maxn),
        bucket_(static_cast<uint32_t>(args.bucket)), fastmod_(UINT64_C(0xFFFFFFFFFFFFFFFF) / bucket_ + 1),
        pruned_(DictionaryAccess::pruneidx_size(dict)) {
    if (pruned_ <= 0) return;
    const auto& pruneidx = DictionaryAccess::pruneidx(dict);
    bits_.assign(bucket_ / 64 + 1, 0);
    ranks_.assign(bits_.size(), 0);
    for (const auto& [key, value] : pruneidx) {
      if (key >= 0 && static_cast<uint32_t>(key) < bucket_) bits_[key / 64] |= UINT64_C(1) << (key % 64);
    }
    uint32_t rank = 0;
    for (size_t block = 0; block < bits_.size(); block++) {
      ranks_[block] = rank;
      rank += static_cast<uint32_t>(__builtin_popcountll(bits_[block]));
    }
    ids_.assign(rank, 0);
    for (const auto& [key, value] : pruneidx) {
      if (key >= 0 && static_cast<uint32_t>(key) < bucket_) ids_[index(key)] = nwords_ + value;
    }
  }

  void append(std::string_view token, std::vector<int32_t>& out) const {
    const int32_t wid = dict_.getId(token, fnv(2166136261u, token.data(), token.size()));
    const fasttext::entry_type type = wid < 0 ? dict_.getType(token) : dict_.getType(wid);
    if (type != fasttext::entry_type::word) return;  // a label (known or not) adds nothing to the words
    if (wid >= 0) {
      if (maxn_ <= 0) {
        out.push_back(wid);
      } else {
        const std::vector<int32_t>& ngrams = dict_.getSubwords(wid);
        out.insert(out.end(), ngrams.begin(), ngrams.end());
      }
      return;
    }
    if (token == fasttext::Dictionary::EOS) return;
    word_.assign(fasttext::Dictionary::BOW);
    word_.append(token.data(), token.size());
    word_ += fasttext::Dictionary::EOW;
    const char* w = word_.data();
    const size_t size = word_.size();
    for (size_t i = 0; i < size; i++) {
      if ((w[i] & 0xC0) == 0x80) continue;
      uint32_t h = 2166136261u;
      for (size_t j = i, n = 1; j < size && n <= static_cast<size_t>(maxn_); n++) {
        const size_t from = j++;
        while (j < size && (w[j] & 0xC0) == 0x80) j++;
        h = fnv(h, w + from, j - from);
        if (n >= static_cast<size_t>(minn_) && !(n == 1 && (i == 0 || j == size))) {
          push(out, static_cast<int32_t>(mod(h)));
        }
      }
    }
  }

 private:
  // Dictionary::hash, continued from h: each byte as a signed char (fastText's released models).
  static uint32_t fnv(uint32_t h, const char* p, size_t n) {
    for (size_t i = 0; i < n; i++) {
      h = h ^ uint32_t(int8_t(p[i]));
      h = h * 16777619;
    }
    return h;
  }

  // h % bucket_, exactly, for every 32-bit h (Lemire, Kaser and Kurz 2019, "Faster remainder by direct
  // computation", with a 64-bit multiplier; checked against % for all 2^32 values of h at 2,000,000).
  uint32_t mod(uint32_t h) const {
    const uint64_t low = fastmod_ * h;
    return static_cast<uint32_t>((static_cast<__uint128_t>(low) * bucket_) >> 64);
  }

  // Dictionary::pushHash.
  void push(std::vector<int32_t>& out, int32_t id) const {
    if (pruned_ == 0 || id < 0) return;
    if (pruned_ < 0) {
      out.push_back(nwords_ + id);
      return;
    }
    if (bits_[id / 64] >> (id % 64) & 1) out.push_back(ids_[index(id)]);
  }

  // The place of a kept bucket's id in ids_.
  uint32_t index(int32_t id) const {
    return ranks_[id / 64] + static_cast<uint32_t>(__builtin_popcountll(bits_[id / 64] & ((UINT64_C(1) << (id % 64)) - 1)));
  }

  const fasttext::Dictionary& dict_;
  const int32_t nwords_, minn_, maxn_;
  const uint32_t bucket_;
  const uint64_t fastmod_;
  const int64_t pruned_;
  std::vector<uint64_t> bits_;   // bucket 64 * i + j is kept (pruneidx_ has it) when bit j of bits_[i] is set
  std::vector<uint32_t> ranks_;  // kept buckets before bits_[i]
  std::vector<int32_t> ids_;     // nwords + pruneidx_[bucket], in bucket order
  mutable std::string word_;
};

class WordCache {
 public:
  WordCache() : slots_(kSlots) {
    keys_.reserve(kMaxKeyBytes);
    ids_.reserve(kMaxIds);
  }

  // Appends the word's ids to `out`, computing them with `subwords` on a miss.
  void append(const Subwords& subwords, std::string_view word, std::vector<int32_t>& out) {
    if (word.size() > kMaxCachedWord) {
      ++long_words_;
      compute(subwords, word);
      out.insert(out.end(), scratch_.begin(), scratch_.end());
      return;
    }
    const uint64_t h = hash_bytes(word.data(), word.size());
    const uint32_t tag = static_cast<uint32_t>(h >> 32) | 1;  // 0 marks an empty slot
    uint32_t slot = static_cast<uint32_t>(h) & (kSlots - 1);
    for (; slots_[slot].tag != 0; slot = (slot + 1) & (kSlots - 1)) {
      const Slot& e = slots_[slot];
      if (e.tag == tag && e.key_size == word.size() && std::memcmp(keys_.data() + e.key_offset, word.data(), word.size()) == 0) {
        out.insert(out.end(), ids_.begin() + e.ids_offset, ids_.begin() + e.ids_offset + e.ids_size);
        ++hits_;
        return;
      }
    }
    ++misses_;
    compute(subwords, word);
    out.insert(out.end(), scratch_.begin(), scratch_.end());
    if (entries_ == kMaxEntries || keys_.size() + word.size() > kMaxKeyBytes || ids_.size() + scratch_.size() > kMaxIds) {
      clear();
      slot = static_cast<uint32_t>(h) & (kSlots - 1);  // the table is empty now: the home slot is free
    }
    slots_[slot] = {tag, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(ids_.size()),
                    static_cast<uint16_t>(word.size()), static_cast<uint16_t>(scratch_.size())};
    ++entries_;
    keys_.insert(keys_.end(), word.begin(), word.end());
    ids_.insert(ids_.end(), scratch_.begin(), scratch_.end());
  }

  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    entries_ = 0;
    keys_.clear();
    ids_.clear();
    ++clears_;
  }

  // {entries now, clears, hits, misses, words too long to cache}
  void stats(int64_t* out) const {
    out[0] = entries_;
    out[1] = clears_;
    out[2] = hits_;
    out[3] = misses_;
    out[4] = long_words_;
  }

 private:
  void compute(const Subwords& subwords, std::string_view word) {
    scratch_.clear();
    subwords.append(word, scratch_);
  }

  // A word's place in keys_ and ids_, in the slot itself: a hit reads the slot, the word and its ids
  // (an index into a separate entry array was one more dependent load, a quarter of the lookups' time).
  struct Slot {
    uint32_t tag = 0;  // high half of the word's hash, | 1
    uint32_t key_offset = 0, ids_offset = 0;
    uint16_t key_size = 0, ids_size = 0;  // a cached word has <= kMaxCachedWord bytes, <= 4 ids per byte + 1
  };

  std::vector<Slot> slots_;
  std::vector<char> keys_;
  std::vector<int32_t> ids_;
  std::vector<int32_t> scratch_;
  int64_t entries_ = 0, clears_ = 0, hits_ = 0, misses_ = 0, long_words_ = 0;
};

struct Model {
  fasttext::FastText fasttext;
  std::shared_ptr<const fasttext::Dictionary> dict;
  std::unique_ptr<Subwords> subwords;
  WordCache cache;
  std::vector<int32_t> ids;
  fasttext::Predictions predictions;
};

// Byte classes: 1 for readWord's separators (and the line breaks lid.py folded into spaces), 2 for the
// first byte of a multi-byte line break (U+0085 is C2 85, U+2028/9 are E2 80 A8/A9).
struct Classes {
  uint8_t of[256] = {};
  Classes() {
    for (unsigned char c : {' ', '\n', '\r', '\t', '\v', '\f', '\0'}) of[c] = 1;
    of[0xC2] = of[0xE2] = 2;
  }
};
const Classes kClasses;

// The length in bytes of the separator starting at p (0 when there is none).
inline size_t separator(const unsigned char* p, const unsigned char* end) {
  const uint8_t c = kClasses.of[*p];
  if (c == 1) return 1;
  if (c == 2) {
    if (p[0] == 0xC2 && end - p >= 2 && p[1] == 0x85) return 2;
    if (p[0] == 0xE2 && end - p >= 3 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) return 3;
  }
  return 0;
}

// The end of the first max_chars code points (as Arrow's utf8_slice_codeunits counts them: lead bytes).
inline const unsigned char* prefix_end(const unsigned char* p, const unsigned char* end, int64_t max_chars) {
  if (end - p <= max_chars) return end;
  int64_t chars = 0;
  for (; p < end; ++p) {
    if ((*p & 0xC0) != 0x80 && ++chars > max_chars) return p;
  }
  return end;
}

void write_error(char* error, int64_t capacity, const char* message) {
  if (capacity <= 0) return;
  std::strncpy(error, message, static_cast<size_t>(capacity - 1));
  error[capacity - 1] = '\0';
}

}  // namespace

#define LID_API __attribute__((visibility("default")))  // built with -fvisibility=hidden, as fastText's own

extern "C" {

// A model handle, or null with the reason in `error`.
LID_API void* lid_load(const char* path, char* error, int64_t error_capacity) {
  try {
    auto model = std::make_unique<Model>();
    model->fasttext.loadModel(std::string(path));
    const fasttext::Args args = model->fasttext.getArgs();
    if (args.model != fasttext::model_name::sup || args.wordNgrams != 1 || args.bucket <= 0) {
      write_error(error, error_capacity, "only supervised models with wordNgrams 1 and buckets (as lid.176) are supported");
      return nullptr;
    }
    model->dict = model->fasttext.getDictionary();
    model->subwords = std::make_unique<Subwords>(*model->dict, args);
    return model.release();
  } catch (const std::exception& e) {
    write_error(error, error_capacity, e.what());
    return nullptr;
  }
}

LID_API void lid_free(void* handle) { delete static_cast<Model*>(handle); }

LID_API int64_t lid_labels(void* handle) { return static_cast<Model*>(handle)->dict->nlabels(); }

// Label i ("__label__en") into out; returns its length (written only when it fits, with a NUL).
LID_API int64_t lid_label(void* handle, int64_t i, char* out, int64_t capacity) {
  const std::string label = static_cast<Model*>(handle)->dict->getLabel(static_cast<int32_t>(i));
  if (static_cast<int64_t>(label.size()) < capacity) std::memcpy(out, label.c_str(), label.size() + 1);
  return static_cast<int64_t>(label.size());
}

// Cache counters: {entries now, clears, hits, misses, words too long to cache} since the load.
LID_API void lid_cache_stats(void* handle, int64_t* out) { static_cast<Model*>(handle)->cache.stats(out); }

// For each of the n strings (data[offsets[i]:offsets[i+1]], valid UTF-8), the top k labels (index, or -1
// where fewer) into labels[n * k] and their probabilities std::exp(log-prob) into probs[n * k] (0 where
// none), as pybind's multilinePredict(line, k, 0.0) gives them. Returns 0, or -1 with `error` set.
LID_API int64_t lid_predict(void* handle, const uint8_t* data, const int64_t* offsets, int64_t n, int64_t max_chars, int32_t k,
                    int32_t* labels, float* probs, char* error, int64_t error_capacity) {
  Model& model = *static_cast<Model*>(handle);
  try {
    for (int64_t i = 0; i < n; ++i) {
      const unsigned char* p = data + offsets[i];
      const unsigned char* end = prefix_end(p, data + offsets[i + 1], max_chars);
      model.ids.clear();
      while (p < end) {
        size_t skip;
        while (p < end && (skip = separator(p, end)) != 0) p += skip;
        const unsigned char* start = p;
        while (p < end && separator(p, end) == 0) ++p;
        if (p == start) break;
        const std::string_view word(reinterpret_cast<const char*>(start), static_cast<size_t>(p - start));
        model.cache.append(*model.subwords, word, model.ids);
        if (word == fasttext::Dictionary::EOS) break;  // getLine stops at an end-of-sentence token
      }
      model.predictions.clear();
      model.fasttext.predict(k, model.ids, model.predictions, 0.0);  // nothing when ids is empty
      for (int32_t j = 0; j < k; ++j) {
        const bool has = j < static_cast<int32_t>(model.predictions.size());
        labels[i * k + j] = has ? model.predictions[j].second : -1;
        probs[i * k + j] = has ? std::exp(model.predictions[j].first) : 0.0f;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    write_error(error, error_capacity, e.what());
    return -1;
  }
}

}  // extern "C"
