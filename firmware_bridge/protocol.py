"""Wire protocol of the serial flasher: COBS frames with a small header and a CRC-32.

One frame on the wire is ``COBS(header | payload | crc32) 0x00``. COBS removes every
zero byte, so ``0x00`` only ever delimits frames: after any damage (a dropped byte, a
boot log, a login prompt) the decoder throws the broken bytes away and is back in sync
at the next delimiter. Byte-for-byte layout, message payloads and error codes:
``docs/protocol.md``.

Header (16 bytes, little-endian): version u8, type u8, flags u8, reserved u8 (0),
session u32, sequence u32, payload length u32. The CRC is CRC-32/IEEE (zlib's,
reflected polynomial 0xEDB88320) over header + payload.

Payloads: DATA and ACK are fixed binary structs (they are the hot path); ERROR is a
u16 code + UTF-8 text; every other message is one UTF-8 JSON object (small, readable,
extensible without a version bump).
"""

from __future__ import annotations

import enum
import json
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

from sdk.errors import SemedgeError

VERSION = 2
"""Message-set version spoken in HELLO. 2 added LIST, APPLY, REVERT, REMOVE, PULL, READ, BYE."""
SERVES = (1, 2)
"""HELLO versions an agent answers: every version-1 message is unchanged in 2."""
FRAME_VERSION = 1
"""Version byte of the frame header (the framing itself is unchanged since 1)."""
HEADER = struct.Struct("<BBBBIII")
CRC = struct.Struct("<I")
OVERHEAD = HEADER.size + CRC.size
DATA_HEADER = struct.Struct("<Q")
ACK_PAYLOAD = struct.Struct("<Q")
SACK_PAYLOAD = struct.Struct("<QQQ")
"""ACK of one DATA frame: next expected offset, then the start and end of the chunk
answered (with the GAP flag: kept beyond a hole). A host reading only the first u64
still works."""
ERROR_HEADER = struct.Struct("<H")
DEFAULT_MAX_PAYLOAD = 8192 + DATA_HEADER.size
"""Largest payload a peer accepts unless HELLO negotiates otherwise."""

FLAG_FROM_DEVICE = 0x01
"""Direction bit: set on frames the agent sends. A receiver drops its own echo."""
FLAG_COMPRESSED = 0x02
"""DATA chunk is zlib-compressed (sent only when that made it smaller)."""
FLAG_GAP = 0x04
"""ACK sent because a DATA frame arrived beyond the expected offset: resend from here."""


class Msg(enum.IntEnum):
    HELLO = 1
    BEGIN = 2
    DATA = 3
    ACK = 4
    VERIFY = 5
    ACTIVATE = 6
    CONFIRM = 7
    ROLLBACK = 8
    STATUS = 9
    ABORT = 10
    PING = 11
    ERROR = 12
    BUSY = 13
    LIST = 14
    APPLY = 15
    REVERT = 16
    REMOVE = 17
    PULL = 18
    READ = 19
    BYE = 20


NEW_IN_2 = frozenset({Msg.LIST, Msg.APPLY, Msg.REVERT, Msg.REMOVE, Msg.PULL, Msg.READ, Msg.BYE})
"""Messages a protocol-1 agent does not know: a host never sends them to one."""


class Code(enum.IntEnum):
    """Stable numeric error codes carried by ERROR frames (never renumber)."""

    BAD_REQUEST = 1
    PROTOCOL_VERSION = 2
    INCOMPATIBLE = 3
    NO_SPACE = 4
    UNSIGNED = 5
    BAD_SIGNATURE = 6
    DOWNGRADE = 7
    BAD_NAME = 8
    TOO_LARGE = 9
    WRONG_BASE = 10
    NO_TRANSFER = 11
    VERIFY_FAILED = 12
    NO_MODEL = 13
    NO_PREVIOUS = 14
    INTERNAL = 15
    NO_FILE = 16
    IN_USE = 17


class ProtocolError(SemedgeError):
    """The link or the peer misbehaved (timeout, device error, unexpected reply)."""


class DeviceError(ProtocolError):
    """The agent refused a request with an ERROR frame (``code`` says why)."""

    def __init__(self, code: int, text: str) -> None:
        name = Code(code).name if code in Code._value2member_map_ else str(code)
        super().__init__(f"device refused ({name}): {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    session: int
    seq: int
    payload: bytes = b""

    def json(self) -> dict[str, Any]:
        """The payload of a JSON message (an empty payload is ``{}``)."""
        if not self.payload:
            return {}
        value = json.loads(self.payload.decode("utf-8"))
        if not isinstance(value, dict):
            raise ValueError("payload is not a JSON object")
        return value


# ---------------------------------------------------------------- COBS


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result has no zero byte (≤ 1 byte per 254)."""
    out = bytearray()
    for block in data.split(b"\x00"):
        while len(block) >= 254:
            out.append(255)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises ``ValueError`` on a malformed encoding."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        block = data[i + 1 : i + code]
        if len(block) != code - 1 or 0 in block:
            raise ValueError("COBS block truncated or holds a zero")
        out += block
        i += code
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- frames


def encode_frame(
    type: int, payload: bytes = b"", *, session: int, seq: int, flags: int = 0
) -> bytes:
    """One complete wire frame including the leading and trailing delimiters."""
    raw = HEADER.pack(FRAME_VERSION, type, flags, 0, session, seq, len(payload)) + payload
    return b"\x00" + cobs_encode(raw + CRC.pack(zlib.crc32(raw))) + b"\x00"


def parse_frame(encoded: bytes) -> Frame:
    """Decode the bytes between two delimiters; ``ValueError`` names what is wrong."""
    raw = cobs_decode(encoded)
    if len(raw) < OVERHEAD:
        raise ValueError("short frame")
    body, (crc,) = raw[:-4], CRC.unpack(raw[-4:])
    if zlib.crc32(body) != crc:
        raise ValueError("crc mismatch")
    version, type, flags, _, session, seq, length = HEADER.unpack(body[: HEADER.size])
    if version != FRAME_VERSION:
        raise ValueError("protocol version")
    if length != len(body) - HEADER.size:
        raise ValueError("length mismatch")
    return Frame(type, flags, session, seq, body[HEADER.size :])


def max_encoded(max_payload: int) -> int:
    """Largest COBS-encoded frame (without delimiters) for ``max_payload`` bytes of payload."""
    raw = max_payload + OVERHEAD
    return raw + raw // 254 + 1


class FrameDecoder:
    """Byte stream → frames. Drops anything broken and resynchronises at the next 0x00.

    Dropped (counted in :attr:`dropped` by reason): COBS errors, CRC/length/version
    mismatches, frames longer than the negotiated maximum (never buffered past it, so a
    huge declared length costs nothing), frames whose direction bit says we sent them
    (an echoing line), frames of another session once :attr:`session` is set (HELLO
    and BUSY are always let through so sessions can be (re)established), and partial
    frames older than ``partial_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        own_direction: int,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        partial_timeout: float = 1.0,
    ) -> None:
        self.own_direction = own_direction
        self.limit = max_encoded(max_payload)
        self.partial_timeout = partial_timeout
        self.session: int | None = None
        self.dropped: dict[str, int] = {}
        self._buf = bytearray()
        self._skipping = False
        self._last = 0.0

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def feed(self, data: bytes, now: float | None = None) -> list[Frame]:
        """Consume received bytes; return the good frames they completed."""
        now = time.monotonic() if now is None else now
        if self._buf and now - self._last > self.partial_timeout:
            self._drop("partial timeout")
            self._buf.clear()
        if data:
            self._last = now
        frames = []
        parts = data.split(b"\x00")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if self._skipping:
                if not last:
                    self._skipping = False
                continue
            if len(self._buf) + len(part) > self.limit:
                self._drop("oversize")
                self._buf.clear()
                self._skipping = last
                continue
            self._buf += part
            if last:
                break
            if self._buf:
                frame = self._complete(bytes(self._buf))
                if frame is not None:
                    frames.append(frame)
                self._buf.clear()
        return frames

    def _complete(self, encoded: bytes) -> Frame | None:
        try:
            frame = parse_frame(encoded)
        except ValueError as exc:
            self._drop(str(exc) if "COBS" not in str(exc) else "cobs")
            return None
        if (frame.flags & FLAG_FROM_DEVICE) == self.own_direction:
            self._drop("own echo")
            return None
        if (
            self.session is not None
            and frame.session != self.session
            and frame.type not in (Msg.HELLO, Msg.BUSY)
        ):
            self._drop("stale session")
            return None
        return frame


# ---------------------------------------------------------------- payloads


def json_payload(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


def data_payload(offset: int, chunk: bytes, compress: bool) -> tuple[bytes, int]:
    """DATA payload and flags: u64 offset + chunk, zlib-compressed only if that shrinks it."""
    if compress:
        packed = zlib.compress(chunk, 6)
        if len(packed) < len(chunk):
            return DATA_HEADER.pack(offset) + packed, FLAG_COMPRESSED
    return DATA_HEADER.pack(offset) + chunk, 0


def parse_data(frame: Frame, max_chunk: int) -> tuple[int, bytes]:
    """(offset, chunk) of a DATA frame; decompression is bounded by ``max_chunk``."""
    if len(frame.payload) < DATA_HEADER.size:
        raise ValueError("short DATA")
    (offset,) = DATA_HEADER.unpack(frame.payload[: DATA_HEADER.size])
    chunk = frame.payload[DATA_HEADER.size :]
    if frame.flags & FLAG_COMPRESSED:
        d = zlib.decompressobj()
        try:
            chunk = d.decompress(chunk, max_chunk + 1)
        except zlib.error:
            raise ValueError("bad compressed DATA") from None
        if len(chunk) > max_chunk or not d.eof:
            raise ValueError("bad compressed DATA")
    return offset, chunk


def error_payload(code: int, text: str) -> bytes:
    return ERROR_HEADER.pack(code) + text.encode("utf-8")[:1000]


def parse_error(frame: Frame) -> tuple[int, str]:
    (code,) = ERROR_HEADER.unpack(frame.payload[: ERROR_HEADER.size].ljust(2, b"\x00"))
    return code, frame.payload[ERROR_HEADER.size :].decode("utf-8", "replace")
