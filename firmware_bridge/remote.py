"""The device verbs a host runs over a :class:`~firmware_bridge.host.Flasher`'s session:
list what is installed, switch weight changes, remove files or slots, pull a file.

``pull`` mirrors flashing in the other direction: the device names the file's size and
SHA-256 (PULL), the host asks for chunks by offset (READ, several in flight) and appends
them in order to ``DEST.part`` beside a ``DEST.part.sha256`` tag. A pull that stops (link
lost, Ctrl-C) resumes from the part's length when run again while the device still holds
the same bytes (same SHA-256); otherwise it starts over. The whole file's SHA-256 is
checked before ``DEST.part`` is renamed onto ``DEST``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from firmware_bridge import protocol as p
from firmware_bridge.host import Flasher, LinkLost
from sdk import artifact


def inventory(flasher: Flasher) -> dict[str, Any]:
    """LIST: per model its slots, change files (size, fingerprints, signed, where active)."""
    return flasher.request(p.Msg.LIST)


def apply(flasher: Flasher, filename: str, model: str | None = None) -> dict[str, Any]:
    """Activate a delta / apply an update on the running slot (model inferred if omitted)."""
    return flasher.request(p.Msg.APPLY, {"target": filename, "model": model})


def revert(flasher: Flasher, kind: str, model: str | None = None) -> dict[str, Any]:
    """Deactivate the running slot's delta (``kind="delta"``) or roll back its update."""
    return flasher.request(p.Msg.REVERT, {"kind": kind, "model": model})


def remove(flasher: Flasher, target: str, model: str | None = None) -> dict[str, Any]:
    """Delete an inactive delta/update file, or an inactive, unconfirmed slot (``A``/``B``)."""
    return flasher.request(p.Msg.REMOVE, {"target": target, "model": model})


def pull(
    flasher: Flasher,
    path: str,
    dest: str | Path,
    *,
    model: str | None = None,
    in_flight: int = 8,
) -> dict[str, Any]:
    """Copy ``path`` (relative to the model's directory on the device; ``active/`` names
    the running slot) to ``dest``; resumes a partial ``dest.part`` of the same file."""
    dest = Path(dest)
    failures = 0
    while True:
        try:
            return _pull_once(flasher, path, dest, model, in_flight)
        except LinkLost:
            failures += 1
            if failures > flasher.retries:
                raise LinkLost(f"link lost while pulling {path}; run the same pull again to "
                               "resume") from None  # fmt: skip
            flasher.stats.reconnects += 1


def _pull_once(
    flasher: Flasher, path: str, dest: Path, model: str | None, in_flight: int
) -> dict[str, Any]:
    from tqdm import tqdm

    flasher.hello()
    info = flasher.request(p.Msg.PULL, {"model": model, "path": path})
    size, sha = int(info["size"]), str(info["sha256"])
    part, tag = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    same = tag.is_file() and tag.read_text().strip() == sha and part.is_file()
    if not same or part.stat().st_size > size:
        part.write_bytes(b"")
        tag.write_text(sha + "\n")
    start = part.stat().st_size
    info["resumed_from"] = start
    chunk = min(flasher.link.max_payload, int(flasher.device.get("max_payload", 0))) - 8
    with (
        open(part, "ab") as f,
        tqdm(total=size, initial=start, unit="B", unit_scale=True, file=sys.stderr,
             disable=not flasher.progress, desc="pull") as bar,
    ):  # fmt: skip
        _receive(flasher, f, sha, start, size, chunk, in_flight, bar.update)
        f.flush()
        os.fsync(f.fileno())
    if artifact.file_sha256(part) != sha:
        part.unlink()
        tag.unlink()
        raise p.ProtocolError(f"pulled {path} does not hash to the device's SHA-256; the "
                              "partial was discarded, pull again")  # fmt: skip
    os.replace(part, dest)
    tag.unlink()
    return {**info, "dest": str(dest)}


def _receive(
    flasher: Flasher, f: Any, sha: str, offset: int, size: int, chunk: int, in_flight: int,
    advanced: Any,
) -> None:  # fmt: skip
    """READ chunks from ``offset`` with up to ``in_flight`` requests outstanding; write them
    to ``f`` in order. A request unanswered for ``rto`` seconds is sent again."""
    pending: dict[int, tuple[int, float]] = {}  # seq -> (offset, sent at)
    arrived: dict[int, bytes] = {}
    asked = written = offset
    last_progress = time.monotonic()

    def ask(at: int) -> None:
        seq = flasher._next_seq()
        length = min(chunk, size - at)
        body = p.json_payload({"sha256": sha, "offset": at, "length": length})
        flasher.link.send(p.Msg.READ, body, seq=seq)
        pending[seq] = (at, time.monotonic())

    while written < size:
        while len(pending) < in_flight and asked < size:
            ask(asked)
            asked += min(chunk, size - asked)
        frame = flasher.link.recv(0.02)
        now = time.monotonic()
        if frame is not None and frame.session == flasher.session and frame.seq in pending:
            if frame.type == p.Msg.ERROR:
                raise p.DeviceError(*p.parse_error(frame))
            if frame.type == p.Msg.DATA:
                at, _ = pending.pop(frame.seq)
                got, data = p.parse_data(frame, chunk)
                if got == at and data:
                    arrived[at] = data
        while written in arrived:
            data = arrived.pop(written)
            f.write(data)
            advanced(len(data))
            written += len(data)
            last_progress = now
        for seq, (at, sent) in list(pending.items()):
            if now - sent > flasher.rto:
                del pending[seq]
                if at >= written and at not in arrived:
                    ask(at)
        if now - last_progress > flasher.link_timeout:
            flasher.connected = False
            raise LinkLost(f"link lost at offset {written} of {size}")
