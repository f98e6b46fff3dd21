// Host emulation of the small part of CUDA C++ our kernels use, so the unchanged .cu
// sources compile with g++ and run on the CPU in the test suite.
//
// What it does: a launch runs the blocks of the grid one after another; the threads of a
// block run concurrently as std::threads (threadIdx/blockIdx are thread_local), so
// __syncthreads is a real barrier, __shared__ is one storage per block (blocks never
// overlap in time), atomicAdd is a real atomic, and __half is IEEE binary16 (_Float16).
//
// What it does NOT emulate: warps (no shuffles/votes, no lock-step or divergence),
// the CUDA memory model (races a GPU would expose may pass here), real timing,
// coalescing, caches, resource limits (registers, shared-memory size), dynamic shared
// memory, streams. Launch one kernel at a time per process (the __shared__ statics are
// process-wide). Needs GCC >= 12 or Clang on x86-64/aarch64 for _Float16.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

// The CUDA runtime's stream handle type (same name and mangling as cuda_runtime_api.h's);
// the emulation runs every launch synchronously and ignores streams.
struct CUstream_st;
using cudaStream_t = CUstream_st*;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_host {

// A reusable barrier for the threads of one block (generation counting).
class Barrier {
  public:
    explicit Barrier(unsigned count) : count_(count) {}
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned long generation = generation_;
        if (++arrived_ == count_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation != generation_; });
        }
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned count_;
    unsigned arrived_ = 0;
    unsigned long generation_ = 0;
};

inline thread_local dim3 thread_index;
inline thread_local dim3 block_index;
inline thread_local Barrier* block_barrier = nullptr;
inline dim3 block_dim;
inline dim3 grid_dim;

// Run kernel<<<grid, block>>>(args...) on the host; returns when every block is done.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
    grid_dim = grid;
    block_dim = block;
    const unsigned threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                Barrier barrier(threads);
                std::vector<std::thread> pool;
                pool.reserve(threads);
                for (unsigned t = 0; t < threads; ++t)
                    pool.emplace_back([&, t] {
                        thread_index = dim3(t % block.x, (t / block.x) % block.y,
                                            t / (block.x * block.y));
                        block_index = dim3(bx, by, bz);
                        block_barrier = &barrier;
                        kernel(static_cast<Params>(args)...);
                    });
                for (auto& th : pool) th.join();
            }
}

}  // namespace cuda_host

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define threadIdx (cuda_host::thread_index)
#define blockIdx (cuda_host::block_index)
#define blockDim (cuda_host::block_dim)
#define gridDim (cuda_host::grid_dim)

inline void __syncthreads() { cuda_host::block_barrier->wait(); }

inline int atomicAdd(int* address, int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
inline unsigned atomicAdd(unsigned* address, unsigned value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }

// IEEE binary16 storage type with the cuda_fp16.h conversion functions we use.
struct __half {
    _Float16 value;
};
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half_rn(float f) { return __half{static_cast<_Float16>(f)}; }
