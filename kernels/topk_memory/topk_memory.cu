// Top-K memory attention forward:
//   out[b,l,:] = sum_{j in top-K(s)} softmax(s_kept)_j * v[b,j,:],  s_j = q[b,l,:].k[b,j,:] / sqrt(d)
// Ties in s keep the lower index. fp32 or fp16 storage, fp32 arithmetic (fmaf dot products).
//
// Two kernels with the same arguments, launched one after the other (topkMemoryLaunch.cu):
//
// topk_scores_*: one block per TOPK_BLOCK keys of one batch element, thread per key. Each
//   block stages q in chunks of TOPK_CHUNK_D features in shared memory; each thread reads its
//   key once and keeps the dot products with all L <= TOPK_MAX_L query rows in registers, so
//   k is read from global memory exactly once for every query row. Scores go to the
//   workspace rows [b*L + l, j] (coalesced).
// topk_select_*: one block per query row, on its score row:
//   1. exact radix select of the topk-th largest order key (digits of 11, 11, 10 bits, shared
//      histogram with atomicAdd). After the first digit, if at most TOPK_CANDIDATES scores
//      share the threshold's digit, one ordered pass keeps every score above that digit and
//      copies the candidates (key + index) to shared memory; the remaining digits and the
//      final pass run there. So a row is read twice (histogram, split), not once per digit;
//   2. ordered compaction (block scan per chunk of TOPK_BLOCK entries), so equal scores are
//      kept lowest index first;
//   3. softmax over the kept scores (block max / sum reductions);
//   4. weighted sum of the kept rows of v: thread t owns output features c = t, t+BLOCK, ...
// Kept indices and weights sit in shared memory for topk <= TOPK_SHARED_K, in the global
// workspace above that (the fallback: identical code, slower memory).
// NaN: order keys put a NaN with the sign bit clear above +inf and one with the sign bit set
// below -inf (the numpy reference puts every NaN last); a kept NaN makes the row's output NaN.
#include "../common.cuh"
#include "topk_memory.cuh"

// Order-preserving map of fp32 to uint32: a > b  <=>  order_key(a) > order_key(b).
__device__ __forceinline__ unsigned order_key(float s) {
    const unsigned u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned umin_(unsigned a, unsigned b) { return a < b ? a : b; }

// Block-wide max (IsMax) or sum of one value per thread; every thread gets the result.
template <bool IsMax>
__device__ float block_reduce(float x, float* scratch) {
    const unsigned t = threadIdx.x;
    scratch[t] = x;
    __syncthreads();
    for (unsigned half = TOPK_BLOCK / 2; half > 0; half >>= 1) {
        if (t < half)
            scratch[t] = IsMax ? fmaxf(scratch[t], scratch[t + half]) : scratch[t] + scratch[t + half];
        __syncthreads();
    }
    const float result = scratch[0];
    __syncthreads();
    return result;
}

// Inclusive block scan (Hillis-Steele); returns this thread's prefix and sets *total.
__device__ unsigned block_scan(unsigned x, unsigned* scratch, unsigned* total) {
    const unsigned t = threadIdx.x;
    scratch[t] = x;
    __syncthreads();
    for (unsigned offset = 1; offset < TOPK_BLOCK; offset <<= 1) {
        const unsigned add = t >= offset ? scratch[t - offset] : 0u;
        __syncthreads();
        scratch[t] += add;
        __syncthreads();
    }
    const unsigned prefix = scratch[t];
    *total = scratch[TOPK_BLOCK - 1];
    __syncthreads();
    return prefix;
}

// The histogram bin, counting from the top, that holds the need-th largest entry, and how many
// of its entries are still needed (written to *bin, *left). Thread t sums `per` bins below
// bin (bins - 1 - t*per); a block scan finds the one thread whose bins cross `need`, and only
// that thread walks its own bins — so no thread walks all of them.
__device__ void find_bin(const unsigned* hist, unsigned bins, unsigned need, unsigned* scratch,
                         unsigned* bin, unsigned* left) {
    const unsigned per = (bins + TOPK_BLOCK - 1) / TOPK_BLOCK;
    const int high = (int)bins - 1 - (int)(threadIdx.x * per);
    unsigned mine = 0u;
    for (int i = high; i > high - (int)per && i >= 0; --i) mine += hist[i];
    unsigned total;
    const unsigned through = block_scan(mine, scratch, &total);  // bins from the top to mine
    if (through - mine < need && need <= through) {
        unsigned still = need - (through - mine);
        int at = high;
        while (hist[at] < still) still -= hist[at--];
        *bin = (unsigned)at;
        *left = still;
    }
    __syncthreads();
}

template <typename T>
__device__ void topk_scores_body(const T* __restrict__ q, const T* __restrict__ k,
                                 float* __restrict__ ws_score, int L, int n, int d) {
    __shared__ float s_q[TOPK_MAX_L * TOPK_CHUNK_D];
    const int tiles = (n + TOPK_BLOCK - 1) / TOPK_BLOCK;
    const long long batch = blockIdx.x / tiles;
    const int j = (int)(blockIdx.x % tiles) * TOPK_BLOCK + (int)threadIdx.x;
    const T* qb = q + batch * L * d;
    const T* kj = k + (batch * n + j) * d;

    float acc[TOPK_MAX_L];
#pragma unroll
    for (int l = 0; l < TOPK_MAX_L; ++l) acc[l] = 0.0f;
    for (int c0 = 0; c0 < d; c0 += TOPK_CHUNK_D) {
        const int width = d - c0 < TOPK_CHUNK_D ? d - c0 : TOPK_CHUNK_D;
        __syncthreads();  // the previous chunk is no longer read
        for (int i = threadIdx.x; i < L * width; i += TOPK_BLOCK)
            s_q[i] = to_f32(qb[(long long)(i / width) * d + c0 + i % width]);
        __syncthreads();
        if (j < n)
            for (int c = 0; c < width; ++c) {
                const float kc = to_f32(kj[c0 + c]);
#pragma unroll
                for (int l = 0; l < TOPK_MAX_L; ++l)
                    if (l < L) acc[l] = fmaf(s_q[l * width + c], kc, acc[l]);
            }
    }
    if (j >= n) return;
    const float scale = 1.0f / sqrtf((float)d);
#pragma unroll
    for (int l = 0; l < TOPK_MAX_L; ++l)
        if (l < L) ws_score[(batch * L + l) * n + j] = acc[l] * scale;
}

// What a selection pass reads: the score row in global memory, or the candidates in shared
// memory (their order keys and indices, in index order).
struct Entries {
    const float* score;
    const unsigned* cand_key;  // nullptr: read the score row
    const int* cand_index;
    __device__ unsigned key(int i) const { return cand_key ? cand_key[i] : order_key(score[i]); }
    __device__ int index(int i) const { return cand_key ? cand_index[i] : i; }
};

// One ordered pass over `count` entries. Entries whose masked key is above `prefix` are
// appended to `kept` after `taken`. Entries equal to it go to the candidate arrays when they
// are given, else to `kept` while fewer than `ties` of them were taken (lowest index first).
// Returns the new number of kept entries (the same in every thread).
__device__ unsigned ordered_pass(Entries from, int count, unsigned mask, unsigned prefix,
                                 unsigned ties, int* kept, unsigned taken, unsigned* cand_key,
                                 int* cand_index, unsigned* scratch) {
    const bool split = cand_key != nullptr;  // equal entries become candidates
    unsigned equal_seen = 0u;
    for (int start = 0; start < count; start += TOPK_BLOCK) {
        const int i = start + (int)threadIdx.x;
        const unsigned key = i < count ? from.key(i) : 0u;
        const unsigned greater = (i < count && (key & mask) > prefix) ? 1u : 0u;
        const unsigned equal = (i < count && (key & mask) == prefix) ? 1u : 0u;
        unsigned total;  // block totals: greater in the low 16 bits, equal in the high 16
        const unsigned before = block_scan(greater | (equal << 16), scratch, &total) -
                                (greater | (equal << 16));
        const unsigned greater_before = before & 0xFFFFu, equal_before = before >> 16;
        const unsigned ties_left = split ? 0u : (ties > equal_seen ? ties - equal_seen : 0u);
        const unsigned kept_equal_before = umin_(equal_before, ties_left);
        if (greater) kept[taken + greater_before + kept_equal_before] = from.index(i);
        if (equal && split) {
            cand_key[equal_seen + equal_before] = key;
            cand_index[equal_seen + equal_before] = from.index(i);
        } else if (equal && equal_before < ties_left) {
            kept[taken + greater_before + equal_before] = from.index(i);
        }
        taken += (total & 0xFFFFu) + umin_(total >> 16, ties_left);
        equal_seen += total >> 16;
    }
    __syncthreads();
    return taken;
}

template <typename T>
__device__ void topk_select_body(const T* __restrict__ v, T* __restrict__ out,
                                 const float* __restrict__ ws_score, int* __restrict__ ws_index,
                                 float* __restrict__ ws_weight, int L, int n, int d, int topk) {
    __shared__ unsigned s_hist[TOPK_BINS];
    __shared__ unsigned s_scan[TOPK_BLOCK];
    __shared__ float s_reduce[TOPK_BLOCK];
    __shared__ int s_index[TOPK_SHARED_K];
    __shared__ float s_weight[TOPK_SHARED_K];
    __shared__ unsigned s_cand_key[TOPK_CANDIDATES];
    __shared__ int s_cand_index[TOPK_CANDIDATES];
    __shared__ unsigned s_bin, s_need;

    const unsigned t = threadIdx.x;
    const long long row = blockIdx.x;
    const T* vb = v + row / L * n * d;
    const float* score = ws_score + row * n;
    const bool in_shared = topk <= TOPK_SHARED_K;
    int* kept = in_shared ? s_index : ws_index + row * topk;
    float* weight = in_shared ? s_weight : ws_weight + row * topk;

    // 1. radix select of the topk-th largest order key, most significant digit first
    Entries from = {score, nullptr, nullptr};
    int count = n;
    unsigned prefix = 0u, mask = 0u, need = (unsigned)topk, taken = 0u;
    for (int level = 0; level < 3; ++level) {
        const unsigned shift = level == 0 ? 21u : (level == 1 ? 10u : 0u);
        const unsigned bins = level == 2 ? TOPK_BINS / 2 : TOPK_BINS;
        for (unsigned i = t; i < bins; i += TOPK_BLOCK) s_hist[i] = 0u;
        __syncthreads();
        for (int i = t; i < count; i += TOPK_BLOCK) {
            const unsigned key = from.key(i);
            if ((key & mask) == prefix) atomicAdd(&s_hist[(key >> shift) & (bins - 1)], 1u);
        }
        __syncthreads();
        find_bin(s_hist, bins, need, s_scan, &s_bin, &s_need);
        prefix |= s_bin << shift;
        need = s_need;
        mask |= (bins - 1) << shift;
        const unsigned in_bin = s_hist[s_bin];
        __syncthreads();  // everyone has read the histogram before the next level clears it
        if (from.cand_key == nullptr && level < 2 && in_bin <= TOPK_CANDIDATES) {
            taken = ordered_pass(from, count, mask, prefix, 0u, kept, 0u, s_cand_key,
                                 s_cand_index, s_scan);
            from = Entries{score, s_cand_key, s_cand_index};
            count = (int)in_bin;
        }
    }
    // 2. greater keys all kept, keys equal to the threshold lowest index first
    ordered_pass(from, count, ~0u, prefix, need, kept, taken, nullptr, nullptr, s_scan);

    // 3. softmax over the kept scores
    float high = -__int_as_float(0x7f800000);
    for (int i = t; i < topk; i += TOPK_BLOCK) high = fmaxf(high, score[kept[i]]);
    high = block_reduce<true>(high, s_reduce);
    float sum = 0.0f;
    for (int i = t; i < topk; i += TOPK_BLOCK) {
        const float e = expf(score[kept[i]] - high);
        weight[i] = e;
        sum += e;
    }
    const float inv_sum = 1.0f / block_reduce<false>(sum, s_reduce);

    // 4. weighted sum of the kept value rows
    T* o = out + row * d;
    for (int c = t; c < d; c += TOPK_BLOCK) {
        float acc = 0.0f;
        for (int i = 0; i < topk; ++i)
            acc = fmaf(weight[i], to_f32(vb[(long long)kept[i] * d + c]), acc);
        o[c] = from_f32<T>(acc * inv_sum);
    }
    // The kept indices always end up in the workspace (callers and tests read them there).
    if (in_shared)
        for (int i = t; i < topk; i += TOPK_BLOCK) ws_index[row * topk + i] = kept[i];
}

// Both kernels take the arguments of the whole op, so launchers pass one list to each.
#define TOPK_KERNELS(suffix, T)                                                                \
    extern "C" __global__ void topk_scores_##suffix(const T* q, const T* k, const T*, T*,      \
                                                    float* ws_score, int*, float*, int L,     \
                                                    int n, int d, int) {                      \
        topk_scores_body<T>(q, k, ws_score, L, n, d);                                         \
    }                                                                                         \
    extern "C" __global__ void topk_select_##suffix(const T*, const T*, const T* v, T* out,    \
                                                    float* ws_score, int* ws_index,           \
                                                    float* ws_weight, int L, int n, int d,    \
                                                    int topk) {                               \
        topk_select_body<T>(v, out, ws_score, ws_index, ws_weight, L, n, d, topk);            \
    }
TOPK_KERNELS(f32, float)
TOPK_KERNELS(f16, __half)
#undef TOPK_KERNELS
