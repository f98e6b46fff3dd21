// Host launcher of the top-K memory kernels for the TensorRT plugin (the order and grids of
// kernels/launch.py). nvcc compiles it for the GPU; g++ compiles it against the host
// emulation (kernels/emulation/plugin_launch.cpp) for the plugin harness test.
#include <cstdint>

#include "topk_memory.cu"

#ifdef __CUDACC__
#define TOPK_LAUNCH(kernel, blocks, stream, ...) \
    kernel<<<dim3(blocks), dim3(TOPK_BLOCK), 0, stream>>>(__VA_ARGS__)
#define TOPK_LAST_ERROR() static_cast<int32_t>(cudaGetLastError())
#else
#define TOPK_LAUNCH(kernel, blocks, stream, ...) \
    ((void)(stream), cuda_host::launch(kernel, dim3(blocks), dim3(TOPK_BLOCK), __VA_ARGS__))
#define TOPK_LAST_ERROR() 0
#endif

namespace semedge {

size_t topKMemoryWorkspaceBytes(int64_t rows, int64_t n, int64_t topk) {
    return static_cast<size_t>(4 * topk_memory_workspace_words(rows, n, topk));
}

int32_t topKMemoryMaxRows() { return TOPK_MAX_L; }

namespace {

template <typename T>
int32_t launch(T const* q, T const* k, T const* v, T* out, void* workspace, int32_t batch,
               int32_t L, int32_t n, int32_t d, int32_t topk, cudaStream_t stream) {
    int64_t const rows = static_cast<int64_t>(batch) * L;
    float* score = static_cast<float*>(workspace);
    int* index = reinterpret_cast<int*>(score + rows * n);
    float* weight = reinterpret_cast<float*>(index + rows * topk);
    auto const scores = static_cast<unsigned>(topk_scores_blocks(batch, n));
    auto const selects = static_cast<unsigned>(rows);
    if constexpr (sizeof(T) == 4) {
        TOPK_LAUNCH(topk_scores_f32, scores, stream, q, k, v, out, score, index, weight, L, n, d,
                    topk);
        TOPK_LAUNCH(topk_select_f32, selects, stream, q, k, v, out, score, index, weight, L, n,
                    d, topk);
    } else {
        TOPK_LAUNCH(topk_scores_f16, scores, stream, q, k, v, out, score, index, weight, L, n, d,
                    topk);
        TOPK_LAUNCH(topk_select_f16, selects, stream, q, k, v, out, score, index, weight, L, n,
                    d, topk);
    }
    return TOPK_LAST_ERROR();
}

}  // namespace

int32_t launchTopKMemory(bool half, void const* q, void const* k, void const* v, void* out,
                         void* workspace, int32_t batch, int32_t L, int32_t n, int32_t d,
                         int32_t topk, cudaStream_t stream) {
    if (static_cast<int64_t>(batch) * L == 0) return 0;
    if (L > TOPK_MAX_L || topk < 1 || topk > n) return 1;
    if (half)
        return launch(static_cast<__half const*>(q), static_cast<__half const*>(k),
                      static_cast<__half const*>(v), static_cast<__half*>(out), workspace, batch,
                      L, n, d, topk, stream);
    return launch(static_cast<float const*>(q), static_cast<float const*>(k),
                  static_cast<float const*>(v), static_cast<float*>(out), workspace, batch, L, n,
                  d, topk, stream);
}

}  // namespace semedge
