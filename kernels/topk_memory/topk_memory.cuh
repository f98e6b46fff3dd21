// Top-K memory attention: compile-time configuration and workspace layout.
#pragma once

// Threads per block (one block per query row). A power of two in [32, 1024].
#ifndef TOPK_BLOCK
#define TOPK_BLOCK 128
#endif
// Largest topk whose kept indices/weights live in shared memory; larger topk falls back to
// the global workspace (same code, slower memory).
#ifndef TOPK_SHARED_K
#define TOPK_SHARED_K 256
#endif
#define TOPK_BINS 256  // radix-select digit: 8 bits per pass, 4 passes over fp32 keys

static_assert((TOPK_BLOCK & (TOPK_BLOCK - 1)) == 0 && TOPK_BLOCK >= 32 && TOPK_BLOCK <= 1024,
              "TOPK_BLOCK must be a power of two in [32, 1024]");

// Workspace per call, in 4-byte words, for rows = B*L query rows:
//   scores [rows * n] float | kept index [rows * topk] int | kept weight [rows * topk] float
// (the weight part is used only when topk > TOPK_SHARED_K; the index part always receives
// the kept indices, in selection order).
inline long long topk_memory_workspace_words(long long rows, long long n, long long topk) {
    return rows * (n + 2 * topk);
}
