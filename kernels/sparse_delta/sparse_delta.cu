// Sparse delta apply / restore over one flat weight buffer (ZFDA deltas on the device).
//
//   apply:   saved[i] = W[idx[i]];  W[idx[i]] = saved[i] + val[i]   (fp32 sum, one rounding)
//   restore: W[idx[i]] = saved[i]                                   (bit-exact by construction)
//
// Indices are validated by the caller (in range, strictly increasing, so no two threads write
// the same element). Grid-stride loops: any grid size is correct; count == 0 is a no-op.
#include "../common.cuh"

template <typename T>
__device__ void sparse_delta_apply_body(T* __restrict__ w, const long long* __restrict__ idx,
                                        const T* __restrict__ val, T* __restrict__ saved,
                                        long long count) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        const long long at = idx[i];
        const T base = w[at];
        saved[i] = base;
        w[at] = from_f32<T>(to_f32(base) + to_f32(val[i]));
    }
}

template <typename T>
__device__ void sparse_delta_restore_body(T* __restrict__ w, const long long* __restrict__ idx,
                                          const T* __restrict__ saved, long long count) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride)
        w[idx[i]] = saved[i];
}

extern "C" __global__ void sparse_delta_apply_f32(float* w, const long long* idx,
                                                  const float* val, float* saved,
                                                  long long count) {
    sparse_delta_apply_body<float>(w, idx, val, saved, count);
}

extern "C" __global__ void sparse_delta_apply_f16(__half* w, const long long* idx,
                                                  const __half* val, __half* saved,
                                                  long long count) {
    sparse_delta_apply_body<__half>(w, idx, val, saved, count);
}

extern "C" __global__ void sparse_delta_restore_f32(float* w, const long long* idx,
                                                    const float* saved, long long count) {
    sparse_delta_restore_body<float>(w, idx, saved, count);
}

extern "C" __global__ void sparse_delta_restore_f16(__half* w, const long long* idx,
                                                    const __half* saved, long long count) {
    sparse_delta_restore_body<__half>(w, idx, saved, count);
}
