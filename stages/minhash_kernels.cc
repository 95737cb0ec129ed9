// MinHash signatures of a batch, the numpy path of `stages/minhash_dedup.py` `signatures()` in one pass:
// each shingle hash goes through MurmurHash3's 32-bit finalizer, then every permutation p maps it to
// a[p] * h + b[p] (mod 2^32, datasketch's affine permutations kept in 32 bits) and the document's slot p
// keeps the minimum. Same arithmetic, same order of nothing (a minimum does not depend on order), so the
// same bytes as numpy (tests/test_dedup.py compares the two on real text).
//
// Why compiled: numpy makes a shingles x num_perm temporary and a second pass for reduceat; on the shared
// text that was 7.9 of the 25 CPU-seconds of bench_peer's whole local run. Here the inner loop over the
// permutations is vectorised (target_clones: AVX2 where the CPU has it, SSE2 otherwise) and nothing is
// allocated.
#include <cstdint>

namespace {

inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}

}  // namespace

extern "C" {

// hashes[n], docs[n] (document index of each shingle, 0 <= docs[i] < n_docs); out[n_docs * num_perm]
// holds each document's signature so far (the caller fills it with 0xFFFFFFFF). Returns 0, or -1 when a
// document index is out of range (nothing written past it).
__attribute__((target_clones("avx2", "default")))
int64_t mh_signatures(const uint32_t* hashes, const int64_t* docs, int64_t n, const uint32_t* a, const uint32_t* b,
                      int64_t num_perm, uint32_t* out, int64_t n_docs) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t doc = docs[i];
    if (doc < 0 || doc >= n_docs) return -1;
    const uint32_t h = fmix32(hashes[i]);
    uint32_t* row = out + doc * num_perm;
    for (int64_t p = 0; p < num_perm; ++p) {
      const uint32_t v = a[p] * h + b[p];
      row[p] = v < row[p] ? v : row[p];
    }
  }
  return 0;
}

}  // extern "C"
