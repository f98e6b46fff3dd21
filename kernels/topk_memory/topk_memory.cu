// Top-K memory attention forward, one thread block per query row:
//   out[b,l,:] = sum_{j in top-K(s)} softmax(s_kept)_j * v[b,j,:],  s_j = q[b,l,:].k[b,j,:] / sqrt(d)
// Ties in s keep the lower index. fp32 or fp16 storage, fp32 arithmetic (fmaf dot products).
//
// Phases (each separated by __syncthreads):
//   1. scores: thread t computes s_j for j = t, t+BLOCK, ... into the global workspace row;
//   2. radix select: four 8-bit passes with a shared histogram (atomicAdd) find the exact
//      order key of the K-th largest score and how many of the scores equal to it to keep;
//   3. ordered compaction: chunks of BLOCK keys, a block scan places every kept index at its
//      position, so equal scores are taken lowest index first;
//   4. softmax over the kept scores (block max / sum reductions);
//   5. weighted sum: thread t owns output features c = t, t+BLOCK, ...
// Kept indices and weights sit in shared memory for topk <= TOPK_SHARED_K, in the global
// workspace above that (the fallback: identical code, slower memory). NaN scores are not
// supported (they order above +inf here, unlike the reference).
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

template <typename T>
__device__ void topk_memory_body(const T* __restrict__ q, const T* __restrict__ k,
                                 const T* __restrict__ v, T* __restrict__ out,
                                 float* __restrict__ ws_score, int* __restrict__ ws_index,
                                 float* __restrict__ ws_weight, int L, int n, int d, int topk) {
    __shared__ unsigned s_hist[TOPK_BINS];
    __shared__ unsigned s_scan[TOPK_BLOCK];
    __shared__ float s_reduce[TOPK_BLOCK];
    __shared__ int s_index[TOPK_SHARED_K];
    __shared__ float s_weight[TOPK_SHARED_K];
    __shared__ unsigned s_prefix, s_need;

    const unsigned t = threadIdx.x;
    const long long row = blockIdx.x;
    const long long batch = row / L;
    const T* qr = q + row * d;
    const T* kb = k + batch * n * d;
    const T* vb = v + batch * n * d;
    float* score = ws_score + row * n;

    // 1. scores
    const float scale = 1.0f / sqrtf((float)d);
    for (int j = t; j < n; j += TOPK_BLOCK) {
        const T* kj = kb + (long long)j * d;
        float dot = 0.0f;
        for (int c = 0; c < d; ++c) dot = fmaf(to_f32(qr[c]), to_f32(kj[c]), dot);
        score[j] = dot * scale;
    }
    if (t == 0) {
        s_prefix = 0u;
        s_need = (unsigned)topk;
    }
    __syncthreads();

    // 2. radix select of the topk-th largest order key, most significant digit first
    unsigned mask = 0u;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (unsigned i = t; i < TOPK_BINS; i += TOPK_BLOCK) s_hist[i] = 0u;
        __syncthreads();
        const unsigned prefix = s_prefix;
        for (int j = t; j < n; j += TOPK_BLOCK) {
            const unsigned key = order_key(score[j]);
            if ((key & mask) == prefix) atomicAdd(&s_hist[(key >> shift) & 0xFFu], 1u);
        }
        __syncthreads();
        if (t == 0) {
            unsigned need = s_need, bin = TOPK_BINS - 1;
            while (s_hist[bin] < need) need -= s_hist[bin--];
            s_prefix = prefix | (bin << shift);
            s_need = need;
        }
        mask |= 0xFFu << shift;
        __syncthreads();
    }
    const unsigned threshold = s_prefix;  // order key of the topk-th largest score
    const unsigned ties = s_need;         // how many scores equal to it are kept

    // 3. ordered compaction: greater keys all kept, equal keys lowest index first
    const bool in_shared = topk <= TOPK_SHARED_K;
    int* kept = in_shared ? s_index : ws_index + row * topk;
    float* weight = in_shared ? s_weight : ws_weight + row * topk;
    unsigned taken = 0u, equal_seen = 0u;  // identical in every thread
    for (int start = 0; start < n; start += TOPK_BLOCK) {
        const int j = start + (int)t;
        const unsigned key = j < n ? order_key(score[j]) : 0u;
        const unsigned greater = (j < n && key > threshold) ? 1u : 0u;
        const unsigned equal = (j < n && key == threshold) ? 1u : 0u;
        const unsigned packed = greater | (equal << 16);
        unsigned total;
        const unsigned before = block_scan(packed, s_scan, &total) - packed;
        const unsigned ties_left = ties > equal_seen ? ties - equal_seen : 0u;
        if (greater || (equal && (before >> 16) < ties_left))
            kept[taken + (before & 0xFFFFu) + umin_(before >> 16, ties_left)] = j;
        taken += (total & 0xFFFFu) + umin_(total >> 16, ties_left);
        equal_seen += total >> 16;
    }
    __syncthreads();

    // 4. softmax over the kept scores
    float high = -INFINITY;
    for (int i = t; i < topk; i += TOPK_BLOCK) high = fmaxf(high, score[kept[i]]);
    high = block_reduce<true>(high, s_reduce);
    float sum = 0.0f;
    for (int i = t; i < topk; i += TOPK_BLOCK) {
        const float e = expf(score[kept[i]] - high);
        weight[i] = e;
        sum += e;
    }
    const float inv_sum = 1.0f / block_reduce<false>(sum, s_reduce);

    // 5. weighted sum of the kept value rows
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

extern "C" __global__ void topk_memory_f32(const float* q, const float* k, const float* v,
                                           float* out, float* ws_score, int* ws_index,
                                           float* ws_weight, int L, int n, int d, int topk) {
    topk_memory_body<float>(q, k, v, out, ws_score, ws_index, ws_weight, L, n, d, topk);
}

extern "C" __global__ void topk_memory_f16(const __half* q, const __half* k, const __half* v,
                                           __half* out, float* ws_score, int* ws_index,
                                           float* ws_weight, int L, int n, int d, int topk) {
    topk_memory_body<__half>(q, k, v, out, ws_score, ws_index, ws_weight, L, n, d, topk);
}
