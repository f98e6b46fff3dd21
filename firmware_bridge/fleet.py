"""Flash one artifact or delta to several devices at once, one thread and port each.

Every device gets its own :class:`~firmware_bridge.host.Flasher` (own serial port, own
session, own resume state) on its own thread; a device that fails — refused, link
lost, port missing — is recorded and the others carry on. An artifact directory is
packed into a ``.tar`` once, not once per device. The serial work is I/O-bound, so
threads suffice; one host drives as many ports as it has (beyond that, see "Fleets
beyond one host" in docs/flashing.md).
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.host import serial_flasher
from sdk import artifact
from sdk.errors import SemedgeError


@dataclass
class DeviceResult:
    """What flashing one port gave: the agent's reply or the one-line error."""

    port: str
    ok: bool = False
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def read_fleet_file(path: str | Path) -> list[str]:
    """Ports listed in ``path``: one per line; blank lines and ``#`` comments ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SemedgeError(f"cannot read fleet file {path} ({exc.strerror})") from None
    ports = [line.split("#", 1)[0].strip() for line in lines]
    ports = [port for port in ports if port]
    if not ports:
        raise SemedgeError(f"fleet file {path} lists no ports; write one serial port per line")
    return ports


def check_ports(ports: list[str]) -> list[str]:
    """The ports, refusing an empty list or one port named twice (two sessions would fight)."""
    if not ports:
        raise SemedgeError("no device: give --port (repeatable) or --fleet FILE")
    twice = sorted({port for port in ports if ports.count(port) > 1})
    if twice:
        raise SemedgeError(f"port {', '.join(twice)} listed more than once; list each device once")
    return ports


def flash_fleet(
    ports: list[str],
    path: str | Path,
    *,
    baud: int = 921_600,
    activate: str | None = "test",
    model: str | None = None,
    progress: bool = True,
    **options: Any,
) -> list[DeviceResult]:
    """Flash ``path`` to every port concurrently; one :class:`DeviceResult` per port, in
    the order given. ``options`` go to :func:`~firmware_bridge.host.serial_flasher`."""
    import dataclasses

    check_ports(ports)
    path = Path(path)
    results = [DeviceResult(port) for port in ports]
    with tempfile.TemporaryDirectory(prefix="semedge-fleet-") as tmp:
        if path.is_dir():  # pack once; every device gets the same bytes
            path = artifact.pack(path, Path(tmp) / f"{path.name}.tar")
        width = max(len(port) for port in ports)

        def one(i: int) -> None:
            res, start = results[i], time.monotonic()
            try:
                flasher = serial_flasher(
                    res.port, baud, progress=progress, label=res.port.ljust(width),
                    position=i, **options,
                )  # fmt: skip
                try:
                    res.result = flasher.flash(path, activate=activate, model=model)
                    res.ok = True
                finally:
                    res.stats = dataclasses.asdict(flasher.stats)
                    flasher.close()
                    flasher.link.close()
            except SemedgeError as exc:
                res.error = str(exc)
            except Exception as exc:  # one device's bug must not stop the others
                res.error = f"{type(exc).__name__}: {exc}"
            res.seconds = time.monotonic() - start

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(ports))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return results


def describe(result: dict[str, Any]) -> str:
    """One line for what a flash installed (artifact slot or delta)."""
    if "delta" in result:
        return f"installed delta {result['delta']} for {result['model']}"
    activated = f", activated ({result['activated']})" if result.get("activated") else ""
    return f"installed {result['model']} in slot {result['slot']}{activated}"


def summary_table(results: list[DeviceResult]) -> str:
    """The per-device table the CLI prints after a fleet flash."""
    width = max(len("PORT"), *(len(r.port) for r in results))
    rows = [f"{'PORT':<{width}}  {'RESULT':<6}  {'SECONDS':>7}  DETAIL"]
    for r in results:
        detail = describe(r.result) if r.ok else str(r.error)
        rows.append(f"{r.port:<{width}}  {'ok' if r.ok else 'FAILED':<6}  {r.seconds:>7.1f}  "
                    f"{detail}")  # fmt: skip
    failed = sum(not r.ok for r in results)
    rows.append(f"{len(results) - failed} of {len(results)} devices flashed"
                + (f", {failed} failed" if failed else ""))  # fmt: skip
    return "\n".join(rows)
