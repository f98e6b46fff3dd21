"""DATA frame size chosen from the measured loss rate of the link (ZMODEM/TCP-style).

A DATA frame with ``L`` chunk bytes costs ``L + H`` bytes on the wire (``H`` =
:data:`FRAME_OVERHEAD`: header, offset, CRC, COBS code byte, two delimiters) and arrives
whole only if none of them is hit — probability ``(1 - q)^(L + H)`` at ``q`` damaged
bytes per byte (a drop, a flipped bit and a duplicated byte all break the CRC or the
COBS framing). With selective retransmission every frame is an independent try, so
goodput as a fraction of the line rate is

    G(L) = L / (L + H) · (1 - q)^(L + H)

and ``dG/dL = 0`` gives ``L* = sqrt(H/q' + H²/4) - H/2 ≈ sqrt(H/q)`` with
``q' = -ln(1 - q)``. :class:`FrameSizer` estimates ``q`` as lost frames / wire bytes
over the frames whose fate the host learned (acknowledged or found lost), both counts
decaying by ``1/memory`` per frame: a loss shrinks the frame at once, clean frames
dilute it and the frame grows back to the largest the peer accepts (from 3e-3 to
8 KiB frames in about 5 · ``memory`` clean frames). The memory counts frames, not
bytes, so the estimate rests on as many frames at 80 bytes as at 8 KiB. COBS adds one
byte per 254 on top; it scales G by 254/255 at every ``L`` and does not move the optimum.
"""

from __future__ import annotations

import math

from firmware_bridge.protocol import DATA_HEADER, OVERHEAD

FRAME_OVERHEAD = OVERHEAD + DATA_HEADER.size + 1 + 2
"""Wire bytes of a DATA frame besides its chunk: 16 header + 8 offset + 4 CRC + 1 COBS
code byte + 2 delimiters = 31."""


def optimal_chunk(fault_rate: float, overhead: int = FRAME_OVERHEAD) -> float:
    """Chunk size maximising goodput at ``fault_rate`` damaged bytes per wire byte."""
    if fault_rate <= 0:
        return math.inf
    rate = -math.log1p(-min(fault_rate, 0.999999))
    return math.sqrt(overhead / rate + overhead**2 / 4) - overhead / 2


def goodput(chunk: float, fault_rate: float, overhead: int = FRAME_OVERHEAD) -> float:
    """Predicted goodput / line rate of ``chunk``-byte frames (COBS expansion included)."""
    wire = chunk + overhead
    return chunk / wire * (1 - fault_rate) ** wire * 254 / 255


class FrameSizer:
    """Running estimate of the link's per-byte loss rate → the DATA chunk size to use."""

    def __init__(self, max_chunk: int, *, min_chunk: int = 64, memory: int = 64):
        if max_chunk < min_chunk:
            raise ValueError(f"max_chunk {max_chunk} is below min_chunk {min_chunk}")
        self.max_chunk = max_chunk
        self.min_chunk = min_chunk
        self.memory = memory
        self.lost = 0.0
        self.seen = 0.0

    def outcome(self, wire_bytes: int, lost: bool) -> None:
        """Account one frame of ``wire_bytes`` that arrived (False) or was lost (True)."""
        keep = 1 - 1 / self.memory
        self.lost = self.lost * keep + (1.0 if lost else 0.0)
        self.seen = self.seen * keep + wire_bytes

    @property
    def fault_rate(self) -> float:
        """Estimated damaged bytes per wire byte (0 until a loss was seen)."""
        return self.lost / self.seen if self.seen else 0.0

    @property
    def chunk(self) -> int:
        """Chunk bytes for the next DATA frame."""
        best = optimal_chunk(self.fault_rate)
        return int(max(self.min_chunk, min(self.max_chunk, best)))
