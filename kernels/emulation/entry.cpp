// Host entry points: the unchanged kernel sources, launched by the emulation layer.
// Built by kernels/build.py into a shared library the tests load with ctypes.
#include "cuda_host.h"

#include "../sparse_delta/sparse_delta.cu"
#include "../topk_memory/topk_memory.cu"

#define EMULATED(name, params, args)                                                    \
    extern "C" void emulate_##name(unsigned grid, unsigned block, params) {          \
        cuda_host::launch(name, dim3(grid), dim3(block), args);                          \
    }
#define P(...) __VA_ARGS__

EMULATED(sparse_delta_apply_f32, P(float* w, const long long* i, const float* v, float* s, long long c),
         P(w, i, v, s, c))
EMULATED(sparse_delta_apply_f16, P(__half* w, const long long* i, const __half* v, __half* s, long long c),
         P(w, i, v, s, c))
EMULATED(sparse_delta_restore_f32, P(float* w, const long long* i, const float* s, long long c),
         P(w, i, s, c))
EMULATED(sparse_delta_restore_f16, P(__half* w, const long long* i, const __half* s, long long c),
         P(w, i, s, c))
EMULATED(topk_memory_f32,
         P(const float* q, const float* k, const float* v, float* o, float* ws, int* wi, float* ww,
           int L, int n, int d, int topk),
         P(q, k, v, o, ws, wi, ww, L, n, d, topk))
EMULATED(topk_memory_f16,
         P(const __half* q, const __half* k, const __half* v, __half* o, float* ws, int* wi,
           float* ww, int L, int n, int d, int topk),
         P(q, k, v, o, ws, wi, ww, L, n, d, topk))

extern "C" int emulated_topk_block() { return TOPK_BLOCK; }
extern "C" int emulated_topk_shared_k() { return TOPK_SHARED_K; }
