// Host entry points: the unchanged kernel sources, launched by the emulation layer.
// Built by kernels/build.py into a shared library the tests load with ctypes.
#include "cuda_host.h"

#include "../sparse_delta/sparse_delta.cu"
#include "../topk_memory/topk_memory.cu"
#include "traffic.h"

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
#define TOPK_PARAMS(T)                                                                    \
    P(const T* q, const T* k, const T* v, T* o, float* ws, int* wi, float* ww, int L, int n, \
      int d, int topk)
#define TOPK_ARGS P(q, k, v, o, ws, wi, ww, L, n, d, topk)
EMULATED(topk_scores_f32, TOPK_PARAMS(float), TOPK_ARGS)
EMULATED(topk_scores_f16, TOPK_PARAMS(__half), TOPK_ARGS)
EMULATED(topk_select_f32, TOPK_PARAMS(float), TOPK_ARGS)
EMULATED(topk_select_f16, TOPK_PARAMS(__half), TOPK_ARGS)

extern "C" int emulated_topk_block() { return TOPK_BLOCK; }
extern "C" int emulated_topk_shared_k() { return TOPK_SHARED_K; }
extern "C" int emulated_topk_max_l() { return TOPK_MAX_L; }
