"""Selective repeat as a state machine: the host's upload against the real agent code,
with hypothesis choosing which frames and ACKs the line loses, and invariants checked
after every step."""

from __future__ import annotations

import hashlib
import mmap
import random
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firmware_bridge import protocol as p
from firmware_bridge.agent import Agent, Transfer
from firmware_bridge.framesize import FrameSizer
from firmware_bridge.host import Flasher, _Upload

SIZE = 40_000


class Line:
    """A lossless-unless-told, in-order line: host frames queue for the agent, ACKs back."""

    max_payload = p.DEFAULT_MAX_PAYLOAD

    def __init__(self) -> None:
        self.to_agent: list[p.Frame] = []
        self.to_host: list[p.Frame] = []
        self.bytes_out = 0

    def send(self, type, payload=b"", *, seq, flags=0, session=0):
        self.to_agent.append(p.Frame(type, flags, 1, seq, payload))
        self.bytes_out += len(p.encode_frame(type, payload, session=1, seq=seq, flags=flags))

    def recv(self, timeout):
        return self.to_host.pop(0) if self.to_host else None


class UploadMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.blob_bytes = random.Random(0).randbytes(SIZE)
        path = Path(self.tmp.name) / "blob"
        path.write_bytes(self.blob_bytes)
        self.file = open(path, "rb")  # noqa: SIM115
        self.blob = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        self.line = Line()
        self.agent = Agent(self.line, Path(self.tmp.name) / "root", facts={})  # type: ignore[arg-type]
        sha = hashlib.sha256(self.blob_bytes).hexdigest()
        self.agent.transfer = Transfer(self.agent.store, {"sha256": sha, "size": SIZE},
                                       held_limit=16_384)  # fmt: skip
        flasher = Flasher(self.line, pipe=4096, rto=1e9, link_timeout=1e9, progress=False)  # type: ignore[arg-type]
        flasher.session = 1
        self.upload = _Upload(flasher, FrameSizer(1024, min_chunk=64), self.blob, 0, 16_384)

    def teardown(self) -> None:
        self.blob.close()
        self.file.close()
        self.tmp.cleanup()

    @rule()
    def host_sends(self) -> None:
        while self.upload.pipe < self.upload.f.pipe and self.upload._send_next():
            pass

    @precondition(lambda self: self.line.to_agent)
    @rule(lose=st.booleans())
    def line_carries_a_frame(self, lose: bool) -> None:
        frame = self.line.to_agent.pop(0)
        if lose:
            return
        rtype, payload, flags = self.agent._data(frame)
        if rtype is not None:
            self.line.to_host.append(p.Frame(rtype, flags | p.FLAG_FROM_DEVICE, 1, frame.seq,
                                             payload))  # fmt: skip

    @precondition(lambda self: self.line.to_host)
    @rule(lose=st.booleans())
    def line_carries_an_ack(self, lose: bool) -> None:
        if lose:
            self.line.to_host.pop(0)
        else:
            self.upload._replies(0)

    @precondition(lambda self: self.upload.flight and not self.line.to_agent)
    @rule()
    def silence_times_out_the_oldest(self) -> None:  # what ``rto`` of silence does
        self.upload._lost(self.upload.flight[min(self.upload.flight)])

    @invariant()
    def accounting_holds(self) -> None:
        up, transfer = self.upload, self.agent.transfer
        assert up.pipe == sum(f.wire for f in up.flight.values())
        assert up.acked <= transfer.offset <= SIZE and up.acked <= up.sent
        assert up.sent - up.acked <= up.window
        # every byte the host sent and the agent lacks is still open or queued to resend
        for start in range(transfer.offset, up.sent, 97):
            held = any(o <= start < o + len(c) for o, c in transfer.held.items())
            covered = any(f.start <= start < f.end for f in up.flight.values()) or any(
                a <= start < b for a, b in up.resend
            )
            assert held or covered, start
        transfer.file.flush()
        written = Path(transfer.path).read_bytes()
        assert written == self.blob_bytes[: len(written)]

    @invariant()
    def frame_size_stays_in_bounds(self) -> None:
        assert 64 <= self.upload.sizer.chunk <= 1024


UploadMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=60, deadline=None)
TestUpload = UploadMachine.TestCase


def test_upload_completes_once_the_line_stops_losing():
    machine = UploadMachine()
    try:
        rng = random.Random(1)
        for _ in range(200):  # a lossy start
            machine.host_sends()
            if machine.line.to_agent:
                machine.line_carries_a_frame(lose=rng.random() < 0.3)
            if machine.line.to_host:
                machine.line_carries_an_ack(lose=rng.random() < 0.3)
        assert machine.upload.sizer.chunk < 1024  # losses shrank the frames
        for _ in range(10_000):  # then a clean line
            if machine.upload.acked == SIZE:
                break
            machine.host_sends()
            while machine.line.to_agent:
                machine.line_carries_a_frame(lose=False)
            while machine.line.to_host:
                machine.line_carries_an_ack(lose=False)
            if machine.upload.flight and not machine.line.to_agent:
                machine.silence_times_out_the_oldest()
        assert machine.upload.acked == SIZE == machine.agent.transfer.offset
        machine.agent.transfer.file.flush()
        assert Path(machine.agent.transfer.path).read_bytes() == machine.blob_bytes
    finally:
        machine.teardown()
