"""Device side of the flasher: answers requests, never speaks first.

One host session at a time: HELLO opens a session (a second host gets BUSY while the
current one has been heard from within ``session_timeout`` seconds; a host that lost
its link may take its own session over by naming it). BEGIN checks everything that
can be checked from the announcement — names, sizes, compatibility, free space,
signature, downgrade, a delta's base — before any data moves. DATA is written in
order to ``incoming/<sha256>.part``; its length is the verified offset a resumed
transfer (same SHA-256) continues from, across host and agent restarts. VERIFY hashes
the whole file and writes it into the inactive slot; ACTIVATE switches slots.
Replies echo the request's sequence number; a repeated request gets the cached reply.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from firmware_bridge import protocol as p
from firmware_bridge import signing
from firmware_bridge.slots import (
    BrokenState,
    ChangeError,
    Downgrade,
    InUse,
    NoModel,
    NoSuchFile,
    SlotError,
    SlotStore,
    WrongBase,
    change_kind,
    crash_point,
    read_header,
    safe_name,
    safe_path,
)
from firmware_bridge.transport import Link
from sdk import artifact
from sdk.errors import SemedgeError

FACT_KEYS = (*artifact.DEVICE_FACTS, "free_bytes")
__all__ = ["Agent", "Refusal", "device_facts"]
CHANGE_CODES = (
    (NoSuchFile, p.Code.NO_FILE),
    (WrongBase, p.Code.WRONG_BASE),
    (InUse, p.Code.IN_USE),
    (Downgrade, p.Code.DOWNGRADE),
)


class Refusal(SemedgeError):
    """A request the agent refuses; becomes an ERROR frame with ``code``."""

    def __init__(self, code: p.Code, text: str) -> None:
        super().__init__(text)
        self.code = code


def device_facts(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """TensorRT/CUDA/L4T versions and compute capability read from this device, then
    ``overrides`` (a facts file or flags; how tests pose as another Jetson)."""
    facts: dict[str, Any] = {**artifact.local_device_facts(), "free_bytes": None}
    for key, value in (overrides or {}).items():
        if key not in FACT_KEYS:
            raise SemedgeError(f"unknown device fact {key!r}; known: {', '.join(FACT_KEYS)}")
        facts[key] = value
    return facts


class Transfer:
    """One incoming file, resumable: the bytes so far live in ``incoming/<sha>.part``."""

    def __init__(self, store: SlotStore, request: dict[str, Any], held_limit: int) -> None:
        self.request = request
        self.sha256 = request["sha256"]
        self.size = int(request["size"])
        self.path = store.root / "incoming" / f"{self.sha256}.part"
        for other in self.path.parent.glob("*"):  # a different artifact discards the partial
            if other != self.path:
                other.unlink()
        self.file = open(self.path, "ab+")  # noqa: SIM115 (open for the transfer's lifetime)
        self.offset = self.path.stat().st_size
        if self.offset > self.size:
            self.file.truncate(0)
            self.offset = 0
        self.gap_reported = False
        self.held: dict[int, bytes] = {}
        self.held_bytes = 0
        self.held_limit = held_limit

    def write(self, offset: int, chunk: bytes) -> str:
        """Take a chunk: 'ok' (the file grew), 'dup' (already had it), 'held' (it lies
        beyond the end: kept in memory, up to ``held_limit`` bytes, until the hole is
        filled, so a lost frame costs one retransmitted frame, not a window) or 'gap'
        (beyond the end and no room to keep it)."""
        if offset + len(chunk) > self.size:
            raise Refusal(p.Code.BAD_REQUEST, "DATA beyond the announced size")
        if offset > self.offset:
            if offset in self.held and len(self.held[offset]) >= len(chunk):
                return "held"
            if self.held_bytes + len(chunk) > self.held_limit:
                return "gap"
            self.held_bytes += len(chunk) - len(self.held.get(offset, b""))
            self.held[offset] = chunk
            return "held"
        if offset + len(chunk) <= self.offset:
            return "dup"
        self._append(offset, chunk)
        while self.held:
            start = min(self.held)
            if start > self.offset:
                break
            held = self.held.pop(start)
            self.held_bytes -= len(held)
            if start + len(held) > self.offset:
                self._append(start, held)
        self.gap_reported = False
        return "ok"

    def _append(self, offset: int, chunk: bytes) -> None:
        self.file.write(chunk[self.offset - offset :])
        self.offset = offset + len(chunk)

    def finish(self) -> Path:
        """fsync, check the SHA-256 of the whole file; the verified file's path."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.offset != self.size or artifact.file_sha256(self.path) != self.sha256:
            self.discard()
            raise Refusal(p.Code.VERIFY_FAILED, "received file does not hash to the announced "
                          "SHA-256; flash again (the partial was discarded)")  # fmt: skip
        return self.path

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class Agent:
    """Serve flasher requests on ``link`` for the slots under ``root``."""

    def __init__(
        self,
        link: Link,
        root: str | Path,
        *,
        facts: dict[str, Any] | None = None,
        trusted_key: bytes | None = None,
        window: int = 64 * 1024,
        session_timeout: float = 2.0,
        test_attempts: int = 0,
        max_file_size: int = 4 << 30,
    ) -> None:
        self.link = link
        self.store = SlotStore(root)
        self.facts = facts if facts is not None else device_facts()
        self.trusted_key = trusted_key
        self.window = window
        self.session_timeout = session_timeout
        self.test_attempts = test_attempts
        self.max_file_size = max_file_size
        self.session: int | None = None
        self.last_seen = 0.0
        self.transfer: Transfer | None = None
        self.staged: dict[str, str] = {}
        self.pull: tuple[str, Any] | None = None
        self._cache: tuple[int, int, bytes, int, int] | None = None

    # ------------------------------------------------------------ loop

    def serve(self, until: float | None = None) -> None:
        """Answer requests until ``until`` (monotonic time) or forever; a model whose state
        is broken is skipped at boot with one line on stderr, the others are served."""
        self.store.boot(warn=lambda line: print(f"semedge agent: {line}", file=sys.stderr,
                                                flush=True))  # fmt: skip
        while until is None or time.monotonic() < until:
            try:
                frame = self.link.recv(0.2)
            except p.ProtocolError:  # port gone (cable out): wait and reopen, don't exit,
                time.sleep(1.0)  # since every agent start counts against a TEST slot
                with contextlib.suppress(p.ProtocolError):
                    self.link.reopen()
                continue
            if frame is not None:
                self.handle(frame)

    def handle(self, frame: p.Frame) -> None:
        now = time.monotonic()
        if frame.type == p.Msg.HELLO:
            self._hello(frame, now)
            return
        if self.session is None or frame.session != self.session:
            return
        if frame.type == p.Msg.BYE:  # the host is done: the next host need not wait
            self.link.send(p.Msg.BYE, b"", seq=frame.seq)
            self.session = None
            return
        self.last_seen = now
        if self._cache and self._cache[:2] == (frame.type, frame.seq):
            _, _, payload, rtype, flags = self._cache
            self.link.send(rtype, payload, seq=frame.seq, flags=flags)
            return
        try:
            rtype, payload, flags = self._dispatch(frame)
        except Refusal as exc:
            rtype, payload, flags = p.Msg.ERROR, p.error_payload(exc.code, str(exc)), 0
        except SemedgeError as exc:
            rtype, payload, flags = p.Msg.ERROR, p.error_payload(p.Code.BAD_REQUEST, str(exc)), 0
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a malformed request
            rtype, payload, flags = p.Msg.ERROR, p.error_payload(p.Code.BAD_REQUEST, repr(exc)), 0
        except Exception as exc:  # never die on one frame: a restart would cost a TEST attempt
            rtype, payload, flags = p.Msg.ERROR, p.error_payload(p.Code.INTERNAL, repr(exc)), 0
        if rtype is None:
            return
        if frame.type not in (p.Msg.DATA, p.Msg.PING, p.Msg.READ):
            self._cache = (frame.type, frame.seq, payload, rtype, flags)
        self.link.send(rtype, payload, seq=frame.seq, flags=flags)

    def _hello(self, frame: p.Frame, now: float) -> None:
        try:
            req = frame.json()
        except ValueError:
            return
        free = (
            self.session is None
            or frame.session == self.session
            or req.get("previous_session") == self.session
            or now - self.last_seen > self.session_timeout
        )
        if not free:
            self.link.send(p.Msg.BUSY, b"", seq=frame.seq, session=frame.session)
            return
        self.session, self.last_seen, self._cache = frame.session, now, None
        self.link.session = frame.session
        if req.get("protocol") not in p.SERVES:
            payload = p.error_payload(p.Code.PROTOCOL_VERSION, f"agent speaks protocol "
                                      f"{', '.join(map(str, p.SERVES))}")  # fmt: skip
            self.link.send(p.Msg.ERROR, payload, seq=frame.seq)
            return
        self.link.send(p.Msg.HELLO, p.json_payload(self._status()), seq=frame.seq)

    def _status(self) -> dict[str, Any]:
        t = self.transfer
        return {
            "protocol": p.VERSION,
            "max_payload": self.link.max_payload,
            "window": self.window,
            "facts": {**self.facts, "free_bytes": self._free()},
            "models": self.store.describe(),
            "transfer": {"sha256": t.sha256, "offset": t.offset, "size": t.size} if t else None,
        }

    def _free(self) -> int:
        given = self.facts.get("free_bytes")
        return int(given) if given is not None else shutil.disk_usage(self.store.root).free

    def _dispatch(self, frame: p.Frame) -> tuple[Any, bytes, int]:
        t = frame.type
        if t == p.Msg.DATA:
            return self._data(frame)
        if t == p.Msg.PING:
            return p.Msg.PING, frame.payload, 0
        if t == p.Msg.READ:
            return self._read(frame.json())
        req = frame.json()
        if t == p.Msg.LIST:
            return p.Msg.LIST, p.json_payload(self._list()), 0
        if t == p.Msg.PULL:
            return p.Msg.PULL, p.json_payload(self._pull(req)), 0
        if t == p.Msg.BEGIN:
            return p.Msg.BEGIN, p.json_payload(self._begin(req)), 0
        if t == p.Msg.VERIFY:
            return p.Msg.VERIFY, p.json_payload(self._verify()), 0
        if t == p.Msg.ABORT:
            if self.transfer:
                self.transfer.discard()
                self.transfer = None
            return p.Msg.ABORT, b"{}", 0
        if t == p.Msg.STATUS:
            return p.Msg.STATUS, p.json_payload(self._status()), 0
        change: str | None = None
        if t in (p.Msg.APPLY, p.Msg.REVERT, p.Msg.REMOVE):
            change = self._change(t, req)
        elif t == p.Msg.ACTIVATE:
            name = str(req.get("model"))
            if name not in self.staged:
                raise Refusal(p.Code.NO_TRANSFER, f"nothing staged for {name}; flash it first")
            test = req.get("mode", "test") == "test"
            attempts = int(req.get("attempts", self.test_attempts))
            self.store.activate(name, self.staged.pop(name), test=test, attempts=attempts)
        elif t == p.Msg.CONFIRM:
            change = self.store.confirm(self._model(req.get("model")))
        elif t == p.Msg.ROLLBACK:
            try:
                change = self.store.rollback(self._model(req.get("model")), self.test_attempts)
            except BrokenState:
                raise
            except SlotError as exc:
                raise Refusal(p.Code.NO_PREVIOUS, str(exc)) from None
        else:
            raise Refusal(p.Code.BAD_REQUEST, f"unknown message type {t}")
        return p.Msg.STATUS, p.json_payload({**self._status(), "change": change}), 0

    def _model(self, name: str | None, fingerprint: Any = None, filename: str | None = None) -> str:
        """``name``, or the one installed model the request fits (:meth:`SlotStore.pick_model`)."""
        try:
            return self.store.pick_model(name, base=fingerprint, filename=filename)
        except NoModel as exc:
            raise Refusal(p.Code.NO_MODEL, str(exc)) from None
        except WrongBase as exc:
            raise Refusal(p.Code.WRONG_BASE, str(exc)) from None

    # ------------------------------------------------------------ weight changes, files

    def _list(self) -> dict[str, Any]:
        """Everything installed: per model its slots (as STATUS) and its change files."""
        table = self.store.describe()
        for name, entry in table.items():
            if "error" in entry:  # a broken state.json: listed with its error only
                continue
            entry["changes"] = self.store.changes(name)
            entry["active_changes"] = self.store.active_changes(name)
        return {"models": table, "free_bytes": self._free()}

    def _change(self, t: int, req: dict[str, Any]) -> str:
        target = str(req.get("target") or "")
        try:
            if t == p.Msg.REVERT:
                kind = str(req.get("kind"))
                if kind not in ("delta", "update"):
                    raise Refusal(p.Code.BAD_REQUEST, f"kind {kind!r} is not delta or update")
                return self.store.revert_change(self._model(req.get("model")), kind)
            if t == p.Msg.REMOVE and target in ("A", "B"):
                return self.store.remove(self._model(req.get("model")), target)
            change_kind(target)
            name = self._model(req.get("model"), filename=target)
            if t == p.Msg.REMOVE:
                return self.store.remove(name, target)
            path = self.store.change_path(name, target)
            if path.is_file():
                signature = path.with_name(f"{target}.sig")
                self._check_signature(
                    signing.signed_message(path),
                    signature.read_bytes() if signature.is_file() else None,
                )
            return self.store.apply_change(name, target)
        except (NoSuchFile, WrongBase, InUse, Downgrade) as exc:
            code = next(c for cls, c in CHANGE_CODES if isinstance(exc, cls))
            raise Refusal(code, str(exc)) from None

    def _pull(self, req: dict[str, Any]) -> dict[str, Any]:
        """Open a file under a model's directory for READ; ``active/`` names the running slot."""
        name, rel = self._model(req.get("model")), str(req.get("path", ""))
        if not safe_path(rel):
            raise Refusal(p.Code.BAD_NAME, f"{rel!r} is not a plain relative path")
        if rel.split("/")[0] == "active":
            slot = self.store.state(name)["active"]
            if slot is None:
                raise Refusal(p.Code.NO_FILE, f"model {name} runs no artifact; flash one first")
            rel = "/".join([slot, *rel.split("/")[1:]])
        path = self.store.model_dir(name) / rel
        if not path.is_file():
            raise Refusal(p.Code.NO_FILE, f"no file {rel} in model {name}; see: semedge device "
                          "list")  # fmt: skip
        if self.pull:
            self.pull[1].close()
        handle = open(path, "rb")  # noqa: SIM115 (kept open until the next PULL: a file
        crash_point("pull-opened")  # replaced meanwhile is still read whole, as hashed: the
        sha, size = artifact.stream_sha256(handle)  # hash and every READ use this descriptor)
        self.pull = (sha, handle)
        return {"model": name, "path": rel, "size": size, "sha256": sha}

    def _read(self, req: dict[str, Any]) -> tuple[Any, bytes, int]:
        offset, length = int(req["offset"]), int(req["length"])
        if not self.pull or self.pull[0] != req.get("sha256"):
            raise Refusal(p.Code.NO_TRANSFER, "READ of a file not opened by PULL; pull again")
        if not 0 < length <= self.link.max_payload - p.DATA_HEADER.size or offset < 0:
            raise Refusal(p.Code.BAD_REQUEST, "READ length out of range")
        self.pull[1].seek(offset)
        chunk = self.pull[1].read(length)
        return (p.Msg.DATA, *p.data_payload(offset, chunk, compress=True))

    # ------------------------------------------------------------ transfer

    def _begin(self, req: dict[str, Any]) -> dict[str, Any]:
        size, sha = int(req["size"]), str(req["sha256"])
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise Refusal(p.Code.BAD_REQUEST, "sha256 must be 64 lowercase hex digits")
        if not 0 < size <= self.max_file_size:
            raise Refusal(p.Code.TOO_LARGE, f"{size} bytes exceeds this device's limit "
                          f"{self.max_file_size}")  # fmt: skip
        signature = bytes.fromhex(req["signature"]) if req.get("signature") else None
        if req["kind"] in ("delta", "update"):
            need = self._check_delta(req, signature)
        elif req["kind"] == "artifact":
            need = self._check_artifact(req, signature)
        else:
            raise Refusal(p.Code.BAD_REQUEST, f"unknown kind {req['kind']!r}")
        if self.transfer and self.transfer.sha256 != sha:
            self.transfer.discard()
            self.transfer = None
        if self.transfer is None:
            self.transfer = Transfer(self.store, req, held_limit=self.window)
        self.transfer.request = req
        if need - self.transfer.offset > self._free():
            self.transfer.discard()
            self.transfer = None
            raise Refusal(p.Code.NO_SPACE, f"needs {need} bytes, {self._free()} free on the "
                          "device; see what is installed with `semedge device list` and free "
                          "space with `semedge device remove`")  # fmt: skip
        return {"offset": self.transfer.offset}

    def _check_artifact(self, req: dict[str, Any], signature: bytes | None) -> int:
        text = req["manifest"].encode("utf-8")
        try:
            manifest = json.loads(text)
        except ValueError:
            raise Refusal(p.Code.BAD_REQUEST, "announced manifest is not JSON") from None
        name = str((manifest.get("model") or {}).get("name"))
        if not safe_name(name):
            raise Refusal(p.Code.BAD_NAME, f"model name {name!r} is not a plain name")
        for file, entry in (manifest.get("files") or {}).items():
            if not safe_path(file):
                raise Refusal(p.Code.BAD_NAME, f"payload name {file!r} is not a plain path")
            if int(entry["size"]) > self.max_file_size:
                raise Refusal(p.Code.TOO_LARGE, f"payload {file!r} is larger than allowed")
        try:
            artifact.validate_manifest(manifest, "announced manifest")
        except artifact.ArtifactError as exc:
            raise Refusal(p.Code.BAD_REQUEST, str(exc)) from None
        try:
            artifact.check_compatible(manifest, self.facts)
        except artifact.ArtifactIncompatibleError as exc:
            raise Refusal(p.Code.INCOMPATIBLE, str(exc)) from None
        self._check_signature(text, signature)
        have = int(self.store.state(name).get("security_counter", 0))
        if int(manifest.get("security_counter", 0)) < have:
            raise Refusal(p.Code.DOWNGRADE, f"security counter {manifest['security_counter']} "
                          f"is below the installed {have}; flash a newer build")  # fmt: skip
        return int(req["size"]) + sum(int(e["size"]) for e in manifest["files"].values())

    def _check_delta(self, req: dict[str, Any], signature: bytes | None) -> int:
        """A delta or update announcement: its name, the model it is for, its base, signature."""
        filename, base = req.get("filename", ""), req.get("header", {}).get("base_fingerprint")
        try:
            kind = change_kind(filename)
        except SlotError as exc:
            raise Refusal(p.Code.BAD_NAME, str(exc)) from None
        if kind != req["kind"]:
            raise Refusal(p.Code.BAD_NAME, f"{filename} is not named like a {req['kind']}")
        name = self._model(req.get("model"), fingerprint=base)
        self._check_base(name, filename, req.get("header", {}))
        self._check_signature(bytes.fromhex(req["sha256"]), signature)
        try:  # the announced counter; the received file's is checked again on install
            self.store.check_counter(name, filename, req.get("header", {}))
        except ChangeError as exc:
            code = p.Code.DOWNGRADE if isinstance(exc, Downgrade) else p.Code.BAD_REQUEST
            raise Refusal(code, str(exc)) from None
        return 2 * int(req["size"])

    def _check_base(self, name: str, filename: str, header: dict[str, Any]) -> None:
        try:
            self.store.check_base(name, filename, header)
        except WrongBase as exc:
            raise Refusal(p.Code.WRONG_BASE, str(exc)) from None

    def _check_signature(self, message: bytes, signature: bytes | None) -> None:
        if self.trusted_key is None:
            return
        try:
            signing.verify_bytes(message, signature, self.trusted_key)
        except signing.SignatureError as exc:
            code = p.Code.UNSIGNED if not signature else p.Code.BAD_SIGNATURE
            raise Refusal(code, str(exc)) from None

    def _data(self, frame: p.Frame) -> tuple[Any, bytes, int]:
        if self.transfer is None:
            raise Refusal(p.Code.NO_TRANSFER, "DATA without BEGIN")
        t = self.transfer
        offset, chunk = p.parse_data(frame, self.link.max_payload)
        result = t.write(offset, chunk)
        if 2 * t.offset >= t.size:
            crash_point("mid-transfer")
        if result == "gap":
            if t.gap_reported:
                return None, b"", 0
            t.gap_reported = True
            return p.Msg.ACK, p.ACK_PAYLOAD.pack(t.offset), p.FLAG_GAP
        # name the frame answered, so the host learns at once which ones were lost
        ack = p.SACK_PAYLOAD.pack(t.offset, offset, offset + len(chunk))
        return p.Msg.ACK, ack, p.FLAG_GAP if result == "held" else 0

    def _verify(self) -> dict[str, Any]:
        t = self.transfer
        if t is None or t.offset != t.size:
            have = f"{t.offset} of {t.size}" if t else "nothing"
            raise Refusal(p.Code.NO_TRANSFER, f"transfer incomplete ({have} bytes); resume it")
        self.transfer = None
        path = t.finish()
        crash_point("received")
        req = t.request
        try:
            if req["kind"] in ("delta", "update"):
                header = read_header(path)
                name = self._model(req.get("model"), fingerprint=header.get("base_fingerprint"))
                self._check_base(name, req["filename"], header)
                signature = bytes.fromhex(req["signature"]) if req.get("signature") else None
                self.store.install_change(name, path, req["filename"], signature)
                return {"model": name, req["kind"]: req["filename"]}
            if artifact.manifest_bytes(path) != req["manifest"].encode("utf-8"):
                raise Refusal(
                    p.Code.VERIFY_FAILED, "artifact manifest differs from the announced one"
                )
            manifest = artifact.verify_artifact(path)
            name = manifest["model"]["name"]
            self.staged[name] = self.store.stage(name, path)
            return {"model": name, "slot": self.staged[name]}
        except Downgrade as exc:
            raise Refusal(p.Code.DOWNGRADE, str(exc)) from None
        except (SlotError, artifact.ArtifactError, ValueError) as exc:
            raise Refusal(p.Code.VERIFY_FAILED, str(exc)) from None
        finally:
            path.unlink(missing_ok=True)
