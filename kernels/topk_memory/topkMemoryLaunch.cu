// Host launcher of the top-K memory kernel for the TensorRT plugin (nvcc only).
#include <cstdint>

#include "topk_memory.cu"

namespace semedge {

size_t topKMemoryWorkspaceBytes(int64_t rows, int64_t n, int64_t topk) {
    return static_cast<size_t>(4 * topk_memory_workspace_words(rows, n, topk));
}

int32_t launchTopKMemory(bool half, void const* q, void const* k, void const* v, void* out,
                         void* workspace, int32_t batch, int32_t L, int32_t n, int32_t d,
                         int32_t topk, cudaStream_t stream) {
    int64_t const rows = static_cast<int64_t>(batch) * L;
    if (rows == 0) return 0;
    float* score = static_cast<float*>(workspace);
    int* index = reinterpret_cast<int*>(score + rows * n);
    float* weight = reinterpret_cast<float*>(index + rows * topk);
    dim3 const grid(static_cast<unsigned>(rows)), block(TOPK_BLOCK);
    if (half)
        topk_memory_f16<<<grid, block, 0, stream>>>(
            static_cast<__half const*>(q), static_cast<__half const*>(k),
            static_cast<__half const*>(v), static_cast<__half*>(out), score, index, weight, L, n,
            d, topk);
    else
        topk_memory_f32<<<grid, block, 0, stream>>>(
            static_cast<float const*>(q), static_cast<float const*>(k),
            static_cast<float const*>(v), static_cast<float*>(out), score, index, weight, L, n,
            d, topk);
    return static_cast<int32_t>(cudaGetLastError());
}

}  // namespace semedge
