"""A framed serial link: pyserial underneath, frames (not bytes) on top, with timeouts.

Both ends use this class; ``device=True`` sets the direction bit on what it sends and
makes the decoder drop frames that carry it (a looped-back or echoing line).
"""

from __future__ import annotations

import contextlib
import time

from firmware_bridge.protocol import (
    DEFAULT_MAX_PAYLOAD,
    FLAG_FROM_DEVICE,
    Frame,
    FrameDecoder,
    ProtocolError,
    encode_frame,
)


def open_serial(port: str, baud: int) -> object:
    """Open ``port`` raw 8N1 at ``baud`` with a short read timeout (the link polls)."""
    import serial

    try:
        return serial.Serial(port, baudrate=baud, timeout=0.02, write_timeout=5)
    except (serial.SerialException, OSError) as exc:
        raise ProtocolError(f"cannot open serial port {port} ({exc}); check --port") from None


class Link:
    """Send and receive whole frames over a serial port (anything with read/write)."""

    def __init__(
        self, port: object, *, device: bool, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        self.port = port
        self.max_payload = max_payload
        self.direction = FLAG_FROM_DEVICE if device else 0
        self.decoder = FrameDecoder(own_direction=self.direction, max_payload=max_payload)
        self.bytes_out = 0
        self.bytes_in = 0
        self._pending: list[Frame] = []

    @property
    def session(self) -> int | None:
        return self.decoder.session

    @session.setter
    def session(self, value: int | None) -> None:
        self.decoder.session = value

    def send(
        self, type: int, payload: bytes = b"", *, seq: int, flags: int = 0, session: int = 0
    ) -> None:
        wire = encode_frame(
            type, payload, session=session or (self.session or 0), seq=seq,
            flags=flags | self.direction,
        )  # fmt: skip
        try:
            self.port.write(wire)  # type: ignore[attr-defined]
        except Exception as exc:
            raise ProtocolError(f"serial write failed ({exc}); is the cable connected?") from None
        self.bytes_out += len(wire)

    def recv(self, timeout: float) -> Frame | None:
        """The next good frame, or None after ``timeout`` seconds without one (with
        ``timeout <= 0``: only what has already arrived, without waiting)."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            try:
                waiting = self.port.in_waiting  # type: ignore[attr-defined]
                if timeout <= 0 and not waiting:
                    return None
                data = self.port.read(max(1, waiting))  # type: ignore[attr-defined]
            except Exception as exc:
                raise ProtocolError(
                    f"serial read failed ({exc}); is the cable connected?"
                ) from None
            self.bytes_in += len(data)
            self._pending.extend(self.decoder.feed(data))
            if not self._pending and time.monotonic() >= deadline:
                return None
        return self._pending.pop(0)

    def reopen(self) -> None:
        """Close and reopen the port (a USB gadget comes back after the cable returns)."""
        with contextlib.suppress(Exception):
            self.port.close()  # type: ignore[attr-defined]
        try:
            self.port.open()  # type: ignore[attr-defined]
        except Exception as exc:
            raise ProtocolError(f"cannot reopen the serial port ({exc})") from None
        self.decoder = FrameDecoder(own_direction=self.direction, max_payload=self.max_payload)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.port.close()  # type: ignore[attr-defined]
