// Top-K memory attention: compile-time configuration and workspace layout.
#pragma once

// Threads per block; also the keys per block of the score kernel. A power of two in
// [32, 1024].
#ifndef TOPK_BLOCK
#define TOPK_BLOCK 128
#endif
// Largest topk whose kept indices/weights live in shared memory; larger topk falls back to
// the global workspace (same code, slower memory).
#ifndef TOPK_SHARED_K
#define TOPK_SHARED_K 256
#endif
// Most query rows per batch element (L): the score kernel keeps one fp32 accumulator per
// row in registers for each of its keys.
#define TOPK_MAX_L 64
// Feature chunk of q staged in shared memory by the score kernel.
#define TOPK_CHUNK_D 32
// Radix select over the 32-bit order keys: digits of 11, 11 and 10 bits.
#define TOPK_BINS 2048
// Candidates (scores in the threshold's top digit) copied to shared memory after the first
// histogram pass, so the rest of the selection never reads the score row again. More
// candidates than this (many equal top digits, e.g. all scores equal) keep working on the
// score row in global memory: same result, more traffic.
#ifndef TOPK_CANDIDATES
#define TOPK_CANDIDATES 2048
#endif

static_assert((TOPK_BLOCK & (TOPK_BLOCK - 1)) == 0 && TOPK_BLOCK >= 32 && TOPK_BLOCK <= 1024,
              "TOPK_BLOCK must be a power of two in [32, 1024]");

#ifndef __CUDACC_RTC__
// Workspace per call, in 4-byte words, for rows = B*L query rows:
//   scores [rows * n] float | kept index [rows * topk] int | kept weight [rows * topk] float
// (the weight part is used only when topk > TOPK_SHARED_K; the index part always receives
// the kept indices, in selection order).
inline long long topk_memory_workspace_words(long long rows, long long n, long long topk) {
    return rows * (n + 2 * topk);
}
// Blocks of the score kernel: one per TOPK_BLOCK keys of each batch element.
inline long long topk_scores_blocks(long long batch, long long n) {
    return batch * ((n + TOPK_BLOCK - 1) / TOPK_BLOCK);
}
#endif
