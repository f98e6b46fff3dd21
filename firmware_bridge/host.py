"""Host side of the flasher: sliding-window upload that survives a bad link.

DATA frames go out back to back while less than ``window`` bytes are unacknowledged;
the agent's cumulative ACK moves the window. A gap ACK (the agent saw a frame beyond
the expected offset, i.e. something was lost; it keeps such frames) makes the flasher
resend just the missing chunk at once (fast retransmit); ``rto`` seconds without
progress rewind to the acknowledged offset (go-back-N). After ``link_timeout`` seconds
without progress the link counts as lost: the flasher says HELLO again (naming its old
session so the agent lets it take over), re-announces the same SHA-256 with BEGIN and
continues from the offset the device reports (at most ``retries`` times in a row
without progress) — as a new process after a host restart does too. ``stats`` records
what was sent, so resumes can be measured.
"""

from __future__ import annotations

import contextlib
import mmap
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge import protocol as p
from firmware_bridge import signing
from firmware_bridge.agent import delta_header
from firmware_bridge.transport import Link, open_serial
from sdk import artifact


class LinkLost(p.ProtocolError):
    """No answer from the device within the link timeout."""


class DeviceBusy(p.ProtocolError):
    """Another host holds the device's session."""


@dataclass
class FlashStats:
    """What one Flasher sent: payload bytes (retransmissions included), how many of them
    were sent a second time, the offsets the device let each attempt resume from."""

    payload_sent: int = 0
    retransmitted: int = 0
    resumed_from: list[int] = field(default_factory=list)
    reconnects: int = 0
    data_seconds: float = 0.0
    """Time spent in the DATA phase (BEGIN reply to last ACK), summed over attempts."""
    data_wire_bytes: int = 0
    """Bytes put on the wire during the DATA phase (frames, retransmissions included)."""


class Flasher:
    """Talk to one agent over ``link``: flash, status, confirm, rollback."""

    def __init__(
        self,
        link: Link,
        *,
        window: int = 64 * 1024,
        rto: float = 1.0,
        link_timeout: float = 3.0,
        busy_wait: float = 5.0,
        retries: int = 5,
        compress: bool = True,
        progress: bool = True,
    ) -> None:
        self.link = link
        self.window = window
        self.rto = rto
        self.link_timeout = link_timeout
        self.busy_wait = busy_wait
        self.retries = retries
        self.compress = compress
        self.progress = progress
        self.seq = 0
        self.session: int | None = None
        self.connected = False
        self.device: dict[str, Any] = {}
        self.stats = FlashStats()

    # ------------------------------------------------------------ requests

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def hello(self) -> dict[str, Any]:
        """Open a session (retrying while the device is BUSY); returns the device's HELLO."""
        previous = self.session
        deadline = time.monotonic() + self.busy_wait
        while True:
            self.session = random.randrange(1, 1 << 32)
            self.link.session = self.session
            reply = self._exchange(
                p.Msg.HELLO,
                p.json_payload({"protocol": p.VERSION, "max_payload": self.link.max_payload,
                                "previous_session": previous}),
                expect=(p.Msg.HELLO, p.Msg.BUSY),
            )  # fmt: skip
            if reply.type == p.Msg.HELLO:
                self.device, self.connected = reply.json(), True
                return self.device
            if time.monotonic() > deadline:
                self.session = previous
                raise DeviceBusy("device is busy with another host session; try again later")
            time.sleep(0.3)

    def _exchange(self, type: int, payload: bytes, expect: tuple[int, ...]) -> p.Frame:
        """Send a request and wait for its reply (same seq), resending on timeout."""
        seq = self._next_seq()
        deadline = time.monotonic() + self.link_timeout
        while time.monotonic() < deadline:
            self.link.send(type, payload, seq=seq)
            resend_at = time.monotonic() + min(self.rto, 0.5)
            while time.monotonic() < resend_at:
                frame = self.link.recv(0.05)
                if frame is None or frame.seq != seq or frame.session != self.session:
                    continue
                if frame.type == p.Msg.ERROR:
                    raise p.DeviceError(*p.parse_error(frame))
                if frame.type in expect:
                    return frame
        self.connected = False
        raise LinkLost(
            f"no answer from the device within {self.link_timeout:g}s; check the cable/port "
            "and that `semedge agent` runs on the device"
        )

    def request(self, type: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON request/reply round trip inside the current session."""
        if not self.connected:
            self.hello()
        changes_slots = type in (p.Msg.ACTIVATE, p.Msg.CONFIRM, p.Msg.ROLLBACK, p.Msg.APPLY,
                                 p.Msg.REVERT, p.Msg.REMOVE)  # fmt: skip
        expect = p.Msg.STATUS if changes_slots else type
        return self._exchange(type, p.json_payload(body or {}), (expect,)).json()

    def close(self) -> None:
        """End the session (BYE, best effort) so another host need not wait out its lease."""
        if self.connected:
            self.connected = False
            with contextlib.suppress(p.ProtocolError):
                self._exchange(p.Msg.BYE, b"", (p.Msg.BYE,))

    def status(self) -> dict[str, Any]:
        return self.request(p.Msg.STATUS)

    def confirm(self, model: str | None = None) -> dict[str, Any]:
        return self.request(p.Msg.CONFIRM, {"model": model})

    def rollback(self, model: str | None = None) -> dict[str, Any]:
        return self.request(p.Msg.ROLLBACK, {"model": model})

    # ------------------------------------------------------------ flashing

    def flash(
        self,
        path: str | Path,
        *,
        activate: str | None = "test",
        model: str | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """Upload an artifact (dir or .tar) or a delta file, resuming after link loss."""
        path = Path(path)
        with tempfile.TemporaryDirectory(prefix="semedge-flash-") as tmp:
            blob_path, begin = self._announcement(path, model, Path(tmp))
            with (
                open(blob_path, "rb") as f,
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob,
            ):
                failures, best = 0, -1
                while True:
                    try:
                        return self._flash_once(blob, begin, activate, attempts)
                    except LinkLost:
                        resumed = self.stats.resumed_from
                        if resumed and resumed[-1] > best:  # progress since: start counting anew
                            failures, best = 0, resumed[-1]
                        failures += 1
                        if failures > self.retries:
                            raise
                        self.stats.reconnects += 1

    def _announcement(
        self, path: Path, model: str | None, tmp: Path
    ) -> tuple[Path, dict[str, Any]]:
        update = path.name.endswith(".update.safetensors")  # SLF: signed like a delta
        if update:
            sig = Path(f"{path}.sig")
            signature = sig.read_bytes() if sig.is_file() else None
        else:
            signature = signing.read_signature(path) if path.exists() else None
        if signing.is_delta(path) or update:
            blob = path
            header = delta_header(path.read_bytes())
            kind = "update" if update else "delta"
            begin: dict[str, Any] = {"kind": kind, "filename": path.name, "model": model,
                     "header": {"base_fingerprint": header.get("base_fingerprint"),
                                "domain": header.get("domain")}}  # fmt: skip
        else:
            blob = path if path.is_file() else artifact.pack(path, tmp / "artifact.tar")
            artifact.verify_artifact(blob)
            begin = {"kind": "artifact", "manifest": artifact.manifest_bytes(blob).decode("utf-8")}
        digest = artifact.file_sha256(blob)
        begin |= {"size": blob.stat().st_size, "sha256": digest,
                  "signature": signature.hex() if signature else None}  # fmt: skip
        return blob, begin

    def _flash_once(
        self, blob: mmap.mmap, begin: dict[str, Any], activate: str | None, attempts: int | None
    ) -> dict[str, Any]:
        self.hello()
        offset = int(self.request(p.Msg.BEGIN, begin)["offset"])
        self.stats.resumed_from.append(offset)
        start, wire = time.monotonic(), self.link.bytes_out
        try:
            self._send(blob, offset)
        finally:
            self.stats.data_seconds += time.monotonic() - start
            self.stats.data_wire_bytes += self.link.bytes_out - wire
        result = self.request(p.Msg.VERIFY)
        if activate and begin["kind"] == "artifact":
            body = {"model": result["model"], "mode": activate}
            if attempts is not None:
                body["attempts"] = attempts
            self.request(p.Msg.ACTIVATE, body)
            result["activated"] = activate
        return result

    def _send_chunk(self, blob: mmap.mmap, offset: int, chunk: int, highest: int) -> int:
        """Send the chunk at ``offset``; returns the offset after it."""
        data = bytes(blob[offset : offset + chunk])
        payload, flags = p.data_payload(offset, data, self.compress)
        self.link.send(p.Msg.DATA, payload, seq=self._next_seq(), flags=flags)
        self.stats.payload_sent += len(data)
        if offset < highest:
            self.stats.retransmitted += min(len(data), highest - offset)
        return offset + len(data)

    def _send(self, blob: mmap.mmap, offset: int) -> None:
        from tqdm import tqdm

        size = len(blob)
        chunk = min(self.link.max_payload, int(self.device.get("max_payload", 0))) - 8
        window = min(self.window, int(self.device.get("window", self.window)))
        acked = sent = offset
        highest = offset
        last_ack = last_rewind = time.monotonic()
        with tqdm(total=size, initial=offset, unit="B", unit_scale=True, file=sys.stderr,
                  disable=not self.progress, desc="flash") as bar:  # fmt: skip
            while acked < size:
                while sent < size and sent - acked < window:
                    sent = self._send_chunk(blob, sent, chunk, highest)
                    highest = max(highest, sent)
                frame = self.link.recv(0.02)
                now = time.monotonic()
                if frame is not None and frame.session == self.session:
                    if frame.type == p.Msg.ERROR:
                        raise p.DeviceError(*p.parse_error(frame))
                    if frame.type == p.Msg.ACK:
                        (ack,) = p.ACK_PAYLOAD.unpack(frame.payload[:8])
                        if ack > acked:
                            bar.update(ack - acked)
                            acked, last_ack = ack, now
                            sent = max(sent, acked)
                        elif frame.flags & p.FLAG_GAP and ack == acked:
                            self._send_chunk(blob, acked, chunk, highest)  # fast retransmit
                if now - last_ack > self.link_timeout:
                    self.connected = False
                    raise LinkLost(f"link lost at offset {acked} of {size}")
                if sent > acked and now - max(last_ack, last_rewind) > self.rto:
                    sent, last_rewind = acked, now


def serial_flasher(port: str, baud: int, **options: Any) -> Flasher:
    """A :class:`Flasher` on serial ``port`` with timeouts scaled to the line rate.

    One full 64 KiB window takes ``10 * window / baud`` seconds on an 8N1 line; the
    retransmit timer waits that plus 0.5 s, and the link counts as lost 2 s later.
    """
    rto = 0.5 + 10 * options.get("window", 64 * 1024) / baud
    timing = {"rto": rto, "link_timeout": rto + 2}
    return Flasher(Link(open_serial(port, baud), device=False), **{**timing, **options})
