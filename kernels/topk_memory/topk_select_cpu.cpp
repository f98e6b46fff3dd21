// Top-K selection for the torch path of TopKMemory on the CPU (loaded by kernels/cpu.py).
//
// dots[B][n][L] is key-major: the L query rows' dot products with key j sit side by side,
// the layout CPU GEMMs produce fastest. For each query row it writes index[B][L][K]: the K
// keys with the largest scale * dot, best first. Equal scores (-0 equals +0) go to the
// lower key index, the op's tie rule; NaN ranks above everything, as in torch.topk and ONNX
// TopK. Needs 1 <= K <= n < 2^32 (the caller checks; otherwise nothing is written).
//
// The keys are scanned in blocks of 32: a loop the compiler vectorises compares each key's
// L scaled scores with the L rows' thresholds and sets one bit per (row, key) that gets
// past. Per row, the set bits are appended to a buffer of candidates; a buffer past
// max(2K, 64) entries is cut back to its K best (nth_element), which raises the row's
// threshold to the K-th best so far. After the first few hundred keys almost nothing gets
// past, so the scan costs about one compare per score. (torch.topk instead copies every score into a
// (value, index) pair before a partial sort.)
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace {

// Unsigned integers in the order of the floats, NaN above everything (as torch.topk ranks)
// and -0 equal to +0 (they compare equal, so they tie).
uint32_t float_order(float value) {
  if (value != value) return 0xffffffffu;
  if (value == 0.0f) value = 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// One 64-bit key per candidate: larger ranks first; equal scores rank the lower key first.
uint64_t rank_key(float value, int64_t key) {
  return (uint64_t{float_order(value)} << 32) | (0xffffffffu - static_cast<uint32_t>(key));
}

// Keep the k best rank keys of `buffer` (in any order) and return the k-th best.
uint64_t cut(std::vector<uint64_t>& buffer, int64_t k) {
  std::nth_element(buffer.begin(), buffer.begin() + (k - 1), buffer.end(), std::greater<>());
  buffer.resize(static_cast<size_t>(k));
  return buffer[static_cast<size_t>(k - 1)];
}

// The score of the threshold rank key, as a float to compare against (NaN: nothing beats it).
float threshold_value(uint64_t rank) {
  const uint32_t order = static_cast<uint32_t>(rank >> 32);
  if (order == 0xffffffffu) return __builtin_nanf("");
  const uint32_t bits = (order & 0x80000000u) ? (order & 0x7fffffffu) : ~order;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace

extern "C" void semedge_topk_key_major(const float* dots, int64_t batch, int64_t n, int64_t rows,
                                       float scale, int64_t k, int64_t* index) {
  if (k < 1 || k > n || n >= (int64_t{1} << 32)) return;
  constexpr int64_t kBlock = 32;  // keys per scan step: one bit each in a row's mask
  const size_t capacity = static_cast<size_t>(std::max<int64_t>(2 * k, 64));
  std::vector<std::vector<uint64_t>> kept(static_cast<size_t>(rows));
  std::vector<float> worst(static_cast<size_t>(rows));
  std::vector<uint32_t> passed(static_cast<size_t>(rows));
  for (int64_t b = 0; b < batch; ++b) {
    const float* scores = dots + b * n * rows;
    for (auto& row : kept) {
      row.clear();
      row.reserve(capacity + kBlock);
    }
    std::fill(worst.begin(), worst.end(), -__builtin_inff());
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t stop = std::min(start + kBlock, n);
      std::fill(passed.begin(), passed.end(), 0u);
      for (int64_t j = start; j < stop; ++j) {
        const float* key = scores + j * rows;
        const uint32_t bit = 1u << (j - start);
        const uint32_t first = j < k ? bit : 0u;  // the first k keys always get in
        for (int64_t r = 0; r < rows; ++r) {
          const float s = key[r] * scale;
          const float w = worst[r];
          // Keys arrive in increasing order, so a score equal to the threshold ranks after
          // it: only a larger score, or NaN over a non-NaN threshold, gets in.
          const bool in = (s > w) | ((s != s) & (w == w));
          passed[r] |= (in ? bit : 0u) | first;
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        auto& row = kept[static_cast<size_t>(r)];
        for (uint32_t mask = passed[r]; mask != 0; mask &= mask - 1) {
          const int64_t j = start + __builtin_ctz(mask);
          row.push_back(rank_key(scores[j * rows + r] * scale, j));
        }
        if (row.size() >= capacity) worst[r] = threshold_value(cut(row, k));
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      auto& row = kept[static_cast<size_t>(r)];
      cut(row, k);
      std::sort(row.begin(), row.end(), std::greater<>());
      int64_t* out = index + (b * rows + r) * k;
      for (int64_t j = 0; j < k; ++j) out[j] = 0xffffffffu - static_cast<uint32_t>(row[j]);
    }
  }
}
