"""A fault-injecting, rate-limited serial relay between pty pairs (tests, benchmarks, soak).

``Relay`` creates one pty pair for the agent and one per host and forwards bytes
between their masters — one thread per direction, so each direction has the line
rate to itself as on a full-duplex UART. On the way it drops, flips and duplicates
bytes, stalls, cuts the link for a while after a given byte count, and paces the
bytes at ``rate`` bytes/s (921,600 baud 8N1 = 92,160 B/s), all drawn from one seed.
Several hosts may share the agent (their bytes merge, the agent's go to all), which
is how a second concurrent host session is tested. Linux/macOS only (``os.openpty``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass, field


def pty_pair() -> tuple[int, int, str]:
    """(master fd, slave fd, slave path) with the slave raw (no echo, no line editing)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


@dataclass
class Faults:
    """Per-byte fault probabilities and link behaviour; everything drawn from ``seed``."""

    drop: float = 0.0
    flip: float = 0.0
    dup: float = 0.0
    """Probabilities per byte that it is dropped, has one bit flipped, or is sent twice
    (at most one fault per byte; a fault's kind is drawn in these proportions)."""
    stall: float = 0.0
    """Probability per forwarded block of a 0.05-0.3 s stall."""
    disconnect_after: list[int] = field(default_factory=list)
    """Host→agent byte counts at which the link goes dead for ``disconnect_seconds``."""
    disconnect_seconds: float = 1.5
    rate: float | None = None
    """Bytes per second per direction (None = as fast as the ptys go)."""
    fifo: float = 0.01
    """Seconds of data a paced direction's emulated UART FIFO holds (10 ms = 922 bytes at
    921,600 baud): while it is not empty the line stays busy, so this thread waking late
    does not idle the line; 0 = the thread itself must keep the line busy. In any span
    at most ``rate`` × (span + ``fifo``) bytes + one read pass."""
    seed: int = 0


class Relay:
    """Host ptys ↔ agent pty through :class:`Faults`; ``close()`` stops it."""

    def __init__(self, faults: Faults | None = None, hosts: int = 1) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
        self.agent_master, self._agent_slave, self.agent_port = pty_pair()
        self.hosts = [pty_pair() for _ in range(hosts)]
        self.host_ports = [h[2] for h in self.hosts]
        self.host_port = self.host_ports[0]
        self.to_agent = 0
        self.to_host = 0
        self.down_until = 0.0
        self._until_fault: int | None = None
        self._disconnects = sorted(self.faults.disconnect_after)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._pump, args=(src, dsts, to_agent), daemon=True)
            for src, dsts, to_agent in [
                *[(h[0], [self.agent_master], True) for h in self.hosts],
                (self.agent_master, [h[0] for h in self.hosts], False),
            ]
        ]
        for t in self._threads:
            t.start()

    def _mangle(self, data: bytes) -> bytes:
        """Apply the byte faults. The clean run before the next fault is drawn from its
        geometric distribution, so a clean stretch costs one slice, not a draw per byte."""
        f = self.faults
        total = f.drop + f.flip + f.dup
        if not total:
            return data
        out = bytearray()
        pos = 0
        with self._lock:
            if self._until_fault is None:
                self._until_fault = self._clean_run(total)
            while pos + self._until_fault < len(data):
                at = pos + self._until_fault
                out += data[pos:at]
                kind = self.rng.random() * total
                if kind >= f.drop + f.flip:
                    out += data[at : at + 1] * 2
                elif kind >= f.drop:
                    out.append(data[at] ^ (1 << self.rng.randrange(8)))
                pos = at + 1
                self._until_fault = self._clean_run(total)
            self._until_fault -= len(data) - pos
        return bytes(out + data[pos:])

    def _clean_run(self, fault_rate: float) -> int:
        """Bytes before the next fault when each byte is hit with ``fault_rate``."""
        return int(math.log(1.0 - self.rng.random()) / math.log1p(-min(fault_rate, 0.5)))

    def _count(self, n: int, to_agent: bool) -> bool:
        """Account ``n`` bytes; False while the link is cut."""
        now = time.monotonic()
        with self._lock:
            if to_agent:
                self.to_agent += n
                if self._disconnects and self.to_agent >= self._disconnects[0]:
                    self._disconnects.pop(0)
                    self.down_until = now + self.faults.disconnect_seconds
            else:
                self.to_host += n
            stall = self.faults.stall and self.rng.random() < self.faults.stall
            pause = self.rng.uniform(0.05, 0.3) if stall else 0.0
        if pause:
            time.sleep(pause)
        return now >= self.down_until

    def _pump(self, src: int, dsts: list[int], to_agent: bool) -> None:
        rate = self.faults.rate
        chunk = max(64, int(rate / 200)) if rate else 65536
        queued, stamp = 0.0, time.monotonic()  # bytes in the emulated UART's FIFO, when
        while not self._stop.is_set():
            ready, _, _ = select.select([src], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(src, chunk)
            except OSError:
                continue
            if not self._count(len(data), to_agent):
                continue  # cable pulled: bytes in flight are lost
            if rate:  # the line drains the FIFO at ``rate``; wait while it holds > ``fifo`` s
                now = time.monotonic()
                queued = max(0.0, queued - (now - stamp) * rate) + len(data)
                stamp = now
                time.sleep(max(0.0, queued / rate - self.faults.fifo))
            data = self._mangle(data)
            for dst in dsts:
                with contextlib.suppress(OSError):
                    os.write(dst, data)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for fd in [self.agent_master, self._agent_slave, *(x for h in self.hosts for x in h[:2])]:
            os.close(fd)
