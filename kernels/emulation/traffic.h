// Global-memory traffic of the emulated kernels, counted at every load and store they make.
//
// Built only into the counting variant of the emulation (kernels.build.build_emulation with
// count_bytes=True): g++ -fsanitize=kernel-address with a call threshold of 0 turns every
// memory access of the compiled code into a call __asan_{load,store}<size>_noabort(address),
// which this file defines. An access is counted when its address lies in a range the caller
// registered (the kernel's global buffers); shared memory (statics), registers and the
// emulation's own bookkeeping fall outside them. Counts are bytes requested by the kernel
// code: no caches, no coalescing, no transaction rounding.
#pragma once
#ifdef EMULATION_COUNT_BYTES
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cuda_host::traffic {
constexpr int kRanges = 16;
inline volatile uintptr_t begin[kRanges], end[kRanges];
inline volatile int ranges = 0;
inline std::atomic<long long> loaded{0}, stored{0};

__attribute__((no_sanitize_address)) inline bool watched(uintptr_t address) {
    for (int i = 0; i < ranges; ++i)
        if (address >= begin[i] && address < end[i]) return true;
    return false;
}
}  // namespace cuda_host::traffic

#define TRAFFIC_HOOKS(size)                                                                  \
    extern "C" __attribute__((no_sanitize_address)) void __asan_load##size##_noabort(         \
        uintptr_t a) {                                                                       \
        if (cuda_host::traffic::watched(a))                                                  \
            cuda_host::traffic::loaded.fetch_add(size, std::memory_order_relaxed);           \
    }                                                                                        \
    extern "C" __attribute__((no_sanitize_address)) void __asan_store##size##_noabort(        \
        uintptr_t a) {                                                                       \
        if (cuda_host::traffic::watched(a))                                                  \
            cuda_host::traffic::stored.fetch_add(size, std::memory_order_relaxed);           \
    }
TRAFFIC_HOOKS(1)
TRAFFIC_HOOKS(2)
TRAFFIC_HOOKS(4)
TRAFFIC_HOOKS(8)
TRAFFIC_HOOKS(16)
#undef TRAFFIC_HOOKS
extern "C" __attribute__((no_sanitize_address)) void __asan_loadN_noabort(uintptr_t a, size_t n) {
    if (cuda_host::traffic::watched(a)) cuda_host::traffic::loaded.fetch_add((long long)n);
}
extern "C" __attribute__((no_sanitize_address)) void __asan_storeN_noabort(uintptr_t a, size_t n) {
    if (cuda_host::traffic::watched(a)) cuda_host::traffic::stored.fetch_add((long long)n);
}
extern "C" __attribute__((no_sanitize_address)) void __asan_handle_no_return() {}
extern "C" __attribute__((no_sanitize_address)) void __asan_before_dynamic_init(const char*) {}
extern "C" __attribute__((no_sanitize_address)) void __asan_after_dynamic_init() {}

// Forget all ranges and counts.
extern "C" __attribute__((no_sanitize_address)) void emulated_traffic_reset() {
    cuda_host::traffic::ranges = 0;
    cuda_host::traffic::loaded = 0;
    cuda_host::traffic::stored = 0;
}
// Count accesses to [address, address + bytes) from now on; 0 when the table is full.
extern "C" __attribute__((no_sanitize_address)) int emulated_traffic_watch(const void* address,
                                                                          size_t bytes) {
    const int i = cuda_host::traffic::ranges;
    if (i == cuda_host::traffic::kRanges) return 0;
    cuda_host::traffic::begin[i] = reinterpret_cast<uintptr_t>(address);
    cuda_host::traffic::end[i] = reinterpret_cast<uintptr_t>(address) + bytes;
    cuda_host::traffic::ranges = i + 1;
    return 1;
}
extern "C" __attribute__((no_sanitize_address)) long long emulated_traffic_loaded() {
    return cuda_host::traffic::loaded;
}
extern "C" __attribute__((no_sanitize_address)) long long emulated_traffic_stored() {
    return cuda_host::traffic::stored;
}
#endif
