"""How the top-K memory op is launched: which kernels, in which order, on how many blocks.

One place for every launcher (the CPU emulation, pycuda in :mod:`kernels.cuda`; the
plugin's C++ launcher ``topk_memory/topkMemoryLaunch.cu`` mirrors it). Both kernels take
the same arguments ``(q, k, v, out, ws_score, ws_index, ws_weight, L, n, d, topk)``.
"""

from __future__ import annotations

from kernels.reference import KernelInputError

TOPK_MAX_L = 64  # query rows per batch element the score kernel holds (topk_memory.cuh)


def topk_memory_launches(batch: int, L: int, n: int, block: int) -> list[tuple[str, int]]:
    """``[(kernel name without dtype suffix, blocks), ...]`` in launch order.

    ``topk_scores``: one block per ``block`` keys of each batch element (reads k once);
    ``topk_select``: one block per query row.
    """
    if L > TOPK_MAX_L:
        raise KernelInputError(
            f"topk_memory kernels take at most {TOPK_MAX_L} query rows (L), got {L}; "
            "split the queries into several calls"
        )
    return [("topk_scores", batch * -(-n // block)), ("topk_select", batch * L)]
