"""Host side of the flasher: selective-repeat upload that survives a bad link.

DATA frames go out while less than ``window`` bytes are unacknowledged and less than
``pipe`` bytes are of unknown fate; the agent acknowledges every frame (cumulatively,
or selectively for one it keeps beyond a hole), so a lost frame is found as soon as a
later one arrives and only it is resent. The frame size follows the measured loss rate
(:mod:`firmware_bridge.framesize`): it shrinks when frames are lost and grows back when
the line is clean. The flasher never gives up while the device answers: the link
counts as lost only after ``link_timeout`` seconds in which nothing came back. Then it
says HELLO again (naming its old session so the agent lets it take over), re-announces
the same SHA-256 with BEGIN and continues from the offset the device reports (at most
``retries`` times in a row without progress) — as a new process after a host restart
does too. ``stats`` records what was sent, so resumes and losses can be measured.
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
from typing import Any, NoReturn

from firmware_bridge import protocol as p
from firmware_bridge import signing
from firmware_bridge.framesize import FrameSizer
from firmware_bridge.slots import delta_header, read_header
from firmware_bridge.transport import Link, open_serial
from sdk import artifact


def check_upload(path: str | Path) -> None:
    """Raise the one-line reason ``path`` cannot be flashed, before any port is opened: a
    delta must load and validate, an artifact must verify, a signature must be one."""
    path = Path(path)
    if signing.is_weight_change(path):
        from sdk.delta import load_change  # numpy + safetensors, no torch

        load_change(path)
    else:
        if path.is_file() and _is_named_otherwise_delta(path):
            raise artifact.ArtifactError(
                f"{path} is a delta file, but only names ending in .delta.safetensors are "
                f"flashed as deltas; rename it to {path.stem}.delta.safetensors"
            )
        artifact.verify_artifact(path)
    signing.read_signature(path)


def _is_named_otherwise_delta(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        return delta_header(head).get("format") == "semedge.delta"
    except ValueError:
        return False


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
    lost_frames: int = 0
    """DATA frames found lost (by a later frame's ACK or by ``rto``) and resent."""
    timeouts: int = 0
    """Of those, frames resent because the device had said nothing for ``rto``."""
    frame_sizes: list[int] = field(default_factory=list)
    """DATA chunk sizes in the order used, one entry each time the size moved by > 25 %."""
    fault_rate_estimate: float = 0.0
    """The frame sizer's final estimate of damaged bytes per wire byte."""

    def record_frame(self, chunk: int) -> None:
        last = self.frame_sizes[-1] if self.frame_sizes else 0
        if not 0.8 * last <= chunk <= 1.25 * last:
            self.frame_sizes.append(chunk)


class Flasher:
    """Talk to one agent over ``link``: flash, status, confirm, rollback.

    ``window``: unacknowledged bytes at most (the agent's limit applies too); ``pipe``:
    bytes of unknown fate at most (what a resend may wait behind); ``rto``: silence after
    which the oldest open frame is resent; ``link_timeout``: silence after which the link
    counts as lost; ``line_rate``: bytes/s, to space request resends; ``label`` and
    ``position``: the progress line's name and row (fleets).
    """

    def __init__(
        self,
        link: Link,
        *,
        window: int = 64 * 1024,
        pipe: int = 32 * 1024,
        rto: float = 0.5,
        link_timeout: float = 3.0,
        line_rate: float = 92_160.0,
        busy_wait: float = 5.0,
        retries: int = 5,
        compress: bool = True,
        progress: bool = True,
        label: str = "flash",
        position: int | None = None,
    ) -> None:
        self.link = link
        self.window = window
        self.pipe = pipe
        self.rto = rto
        self.line_rate = line_rate
        self.link_timeout = link_timeout
        self.busy_wait = busy_wait
        self.retries = retries
        self.compress = compress
        self.progress = progress
        self.label = label
        self.position = position
        self.seq = 0
        self.protocol = p.VERSION
        """The message set spoken with this device: 1 with an agent of protocol 1."""
        self.session: int | None = None
        self.connected = False
        self.device: dict[str, Any] = {}
        self.stats = FlashStats()
        self.sizer: FrameSizer | None = None

    # ------------------------------------------------------------ requests

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def hello(self) -> dict[str, Any]:
        """Open a session (retrying while the device is BUSY); returns the device's HELLO.

        An agent of protocol 1 refuses a HELLO of 2 (PROTOCOL_VERSION): the host says HELLO
        again with 1 and from then on sends only version-1 messages (see :meth:`request`).
        """
        previous = self.session
        deadline = time.monotonic() + self.busy_wait
        while True:
            self.session = random.randrange(1, 1 << 32)
            self.link.session = self.session
            try:
                reply = self._exchange(
                    p.Msg.HELLO,
                    p.json_payload({"protocol": self.protocol, "previous_session": previous,
                                    "max_payload": self.link.max_payload}),
                    expect=(p.Msg.HELLO, p.Msg.BUSY),
                )  # fmt: skip
            except p.DeviceError as exc:
                if exc.code != p.Code.PROTOCOL_VERSION or self.protocol == 1:
                    raise
                self.protocol, previous = 1, self.session  # the refused HELLO held the session
                continue
            if reply.type == p.Msg.HELLO:
                self.device, self.connected = reply.json(), True
                self.protocol = min(self.protocol, int(self.device.get("protocol", 1)))
                return self.device
            if time.monotonic() > deadline:
                self.session = previous
                raise DeviceBusy("device is busy with another host session; try again later")
            time.sleep(0.3)

    def _exchange(self, type: int, payload: bytes, expect: tuple[int, ...]) -> p.Frame:
        """Send a request and wait for its reply (same seq), resending until it comes.

        Each resend goes with a PING (a few bytes, so it gets through a noisy line
        where a long request may not): while anything of this session comes back the
        device counts as alive and the request is tried again; the link counts as lost
        only after ``link_timeout`` seconds of silence.
        """
        seq = self._next_seq()
        heard = resend_at = time.monotonic()
        interval = 0.2 + 2 * (len(payload) + 64) / self.line_rate
        while time.monotonic() - heard < self.link_timeout:
            if time.monotonic() >= resend_at:
                self.link.send(type, payload, seq=seq)
                self.link.send(p.Msg.PING, b"", seq=seq)
                resend_at = time.monotonic() + interval
            frame = self.link.recv(0.02)
            if frame is None or frame.session != self.session:
                continue
            heard = time.monotonic()
            if frame.seq != seq:
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

    @staticmethod
    def _needs_protocol_2(what: str) -> NoReturn:
        raise p.ProtocolError(
            f"device agent speaks protocol 1, which has no {what}; update the agent on the "
            "device (pip install this release's semedge[agent], then restart `semedge agent`: "
            "docs/flashing.md)"
        )

    def request(self, type: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON request/reply round trip inside the current session."""
        if not self.connected:
            self.hello()
        if self.protocol < 2 and type in p.NEW_IN_2:
            self._needs_protocol_2(p.Msg(type).name)
        changes_slots = type in (p.Msg.ACTIVATE, p.Msg.CONFIRM, p.Msg.ROLLBACK, p.Msg.APPLY,
                                 p.Msg.REVERT, p.Msg.REMOVE)  # fmt: skip
        expect = p.Msg.STATUS if changes_slots else type
        return self._exchange(type, p.json_payload(body or {}), (expect,)).json()

    def close(self) -> None:
        """End the session (BYE, best effort) so another host need not wait out its lease."""
        if self.connected:
            self.connected = False
            if self.protocol < 2:  # no BYE in protocol 1: the session lease runs out instead
                return
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
        check_upload(path)
        signature = signing.read_signature(path)
        if signing.is_weight_change(path):
            blob = path
            header = read_header(path)
            kind = "update" if path.name.endswith(signing.UPDATE_SUFFIX) else "delta"
            announced = ("base_fingerprint", "domain", "security_counter")
            begin: dict[str, Any] = {"kind": kind, "filename": path.name, "model": model,
                     "header": {k: header.get(k) for k in announced if k in header}}  # fmt: skip
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
        if self.protocol < 2 and begin["kind"] == "update":
            self._needs_protocol_2("update packages")
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

    def _send(self, blob: mmap.mmap, offset: int) -> None:
        """Upload ``blob[offset:]`` (see :class:`_Upload`), with a progress bar."""
        from tqdm import tqdm

        max_chunk = min(self.link.max_payload, int(self.device.get("max_payload", 0))) - 8
        if self.sizer is None:  # kept across reconnects: the line stays as noisy
            self.sizer = FrameSizer(max(64, max_chunk))
        self.sizer.max_chunk = min(self.sizer.max_chunk, max_chunk)
        self.sizer.min_chunk = min(self.sizer.min_chunk, self.sizer.max_chunk)
        window = min(self.window, int(self.device.get("window", self.window)))
        upload = _Upload(self, self.sizer, blob, offset, window)
        with tqdm(total=len(blob), initial=offset, unit="B", unit_scale=True, file=sys.stderr,
                  disable=not self.progress, desc=self.label, position=self.position,
                  leave=True) as bar:  # fmt: skip
            while upload.acked < len(blob):
                before = upload.acked
                upload.step()
                bar.update(upload.acked - before)
        self.stats.fault_rate_estimate = self.sizer.fault_rate


@dataclass
class _Frame:
    """A DATA frame of unknown fate: chunk range, wire bytes, send order, send time."""

    start: int
    end: int
    wire: int
    order: int
    sent_at: float


class _Upload:
    """One DATA phase: selective repeat with loss detection from the agent's ACKs.

    The agent acknowledges every frame and names it (beside the next offset it expects;
    flagged GAP when it keeps the frame beyond a hole). A serial line never reorders,
    so a frame sent before one that arrived, and not itself acknowledged, was lost: it
    is resent at once, cut to the current frame size. Frames of unknown fate (the "pipe") are
    capped at ``Flasher.pipe`` bytes, so a resend waits behind at most that much, and
    unacknowledged bytes at ``window`` (what the agent keeps beyond a hole). When the
    device has said nothing for ``rto`` the oldest frame counts as lost (the tail of
    the transfer; a line that loses everything). Every fate feeds the frame sizer.
    Replies are read between sends, so neither side ever blocks on a full line.
    """

    def __init__(
        self, flasher: Flasher, sizer: FrameSizer, blob: mmap.mmap, offset: int, window: int
    ) -> None:
        self.f = flasher
        self.blob = blob
        self.window = window
        self.sizer = sizer
        self.acked = self.sent = offset
        self.flight: dict[int, _Frame] = {}
        self.resend: list[tuple[int, int]] = []
        self.pipe = 0
        self.order = 0
        self.heard = time.monotonic()

    def step(self) -> None:
        """Send what the pipe allows, then handle the replies of up to 20 ms."""
        while self.pipe < self.f.pipe and self._send_next():
            self._replies(0)
        self._replies(0.02)
        now = time.monotonic()
        if self.flight and now - self.heard > self.f.rto:
            oldest = self.flight[min(self.flight)]
            if now - oldest.sent_at > self.f.rto:
                self.f.stats.timeouts += 1
                self._lost(oldest)
        if now - self.heard > self.f.link_timeout:
            self.f.connected = False
            raise LinkLost(f"link lost at offset {self.acked} of {len(self.blob)}: no answer "
                           f"for {self.f.link_timeout:g}s")  # fmt: skip

    def _send_next(self) -> bool:
        """Send a resend piece or new data; False when neither is allowed."""
        chunk = self.sizer.chunk
        while self.resend:
            start, end = self.resend.pop(0)
            start = max(start, self.acked)
            if start < end:
                if start + chunk < end:
                    self.resend.insert(0, (start + chunk, end))
                self._transmit(start, min(end, start + chunk), again=True)
                return True
        if self.sent < len(self.blob) and self.sent - self.acked < self.window:
            start, self.sent = self.sent, min(len(self.blob), self.sent + chunk)
            self.f.stats.record_frame(chunk)
            self._transmit(start, self.sent, again=False)
            return True
        return False

    def _transmit(self, start: int, end: int, again: bool) -> None:
        data = bytes(self.blob[start:end])
        payload, flags = p.data_payload(start, data, self.f.compress)
        before = self.f.link.bytes_out
        self.f.link.send(p.Msg.DATA, payload, seq=self.f._next_seq(), flags=flags)
        stats = self.f.stats
        stats.payload_sent += len(data)
        if again:
            stats.retransmitted += len(data)
        self.order += 1
        wire = self.f.link.bytes_out - before
        self.flight[self.order] = _Frame(start, end, wire, self.order, time.monotonic())
        self.pipe += wire

    def _replies(self, timeout: float) -> None:
        reply = self.f.link.recv(timeout)
        while reply is not None:
            if reply.session == self.f.session:
                self.heard = time.monotonic()
                if reply.type == p.Msg.ERROR:
                    raise p.DeviceError(*p.parse_error(reply))
                if reply.type == p.Msg.ACK and len(reply.payload) >= 8:
                    self._ack(reply.payload)
            reply = self.f.link.recv(0)

    def _ack(self, payload: bytes) -> None:
        """The ACK names the frame it answers: that frame arrived, so every frame sent
        before it and still open was lost. Frames below the cumulative offset are done
        either way (another copy may have filled them; their own fate stays unknown)."""
        (ack,) = p.ACK_PAYLOAD.unpack(payload[:8])
        if len(payload) == p.SACK_PAYLOAD.size:
            _, begin, end = p.SACK_PAYLOAD.unpack(payload)
            for order in sorted(self.flight):
                frame = self.flight[order]
                if (frame.start, frame.end) == (begin, end):
                    self._settle(frame, lost=False)
                    for earlier in [f for o, f in self.flight.items() if o < order]:
                        self._lost(earlier)
                    break
        self.acked = max(self.acked, min(ack, len(self.blob)))
        for frame in [f for f in self.flight.values() if f.end <= self.acked]:
            self._settle(frame, lost=None)

    def _settle(self, frame: _Frame, lost: bool | None) -> None:
        del self.flight[frame.order]
        self.pipe -= frame.wire
        if lost is not None:
            self.sizer.outcome(frame.wire, lost=lost)

    def _lost(self, frame: _Frame) -> None:
        self._settle(frame, lost=True)
        self.f.stats.lost_frames += 1
        if frame.end > self.acked:
            self.resend.append((max(frame.start, self.acked), frame.end))


def serial_flasher(port: str, baud: int, **options: Any) -> Flasher:
    """A :class:`Flasher` on serial ``port`` with timers scaled to the line rate.

    A resend waits behind at most one pipe (32 KiB: ``10 * pipe / baud`` seconds on an
    8N1 line); a frame whose fate is unknown 0.3 s after that is resent, and the link
    counts as lost after 3 s in which nothing at all came back.
    """
    rto = 0.3 + 10 * options.get("pipe", 32 * 1024) / baud
    timing = {"rto": rto, "link_timeout": 3.0, "line_rate": baud / 10}
    return Flasher(Link(open_serial(port, baud), device=False), **{**timing, **options})
