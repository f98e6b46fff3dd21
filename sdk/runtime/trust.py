"""Signature checks of :class:`~sdk.Runtime` on a device that has a trusted key.

The agent already refuses unsigned uploads, but an application loads files from disk,
where anything with write access could have replaced them. So where the device has a
trusted key, the Runtime loads only artifacts whose ``manifest.sig`` verifies (the
manifest holds every payload file's SHA-256, so this covers the whole artifact; an
edited manifest fails) and activates only delta/update files whose ``FILE.sig``
verifies. Checkpoints and bare ``.onnx`` files carry no signature and are refused
there. In-memory ``Delta`` objects are accepted: they come from code already running
on the device (on-device adaptation). A signature does not expire, so a validly signed
*old* delta could be put back; when the model is an agent's slot, a change file whose
``security_counter`` is below the highest the agent installed for that model is refused
too (the agent's own rule, :func:`firmware_bridge.slots.change_counter`).

The key: ``Runtime.load(..., trusted_key=PATH)``, else ``$SEMEDGE_TRUSTED_KEY`` (set
but empty: no checks), else ``/etc/semedge/trusted.pub`` when it exists — the file the
agent's systemd unit uses, so app and agent trust the same key.
"""

from __future__ import annotations

import os
from pathlib import Path

from firmware_bridge import signing
from firmware_bridge.slots import SLOTS, STATE, check_floor, read_state

TRUSTED_KEY_ENV = "SEMEDGE_TRUSTED_KEY"
DEVICE_KEY = Path("/etc/semedge/trusted.pub")


def device_key(explicit: str | Path | None = None) -> bytes | None:
    """The public key this device trusts (see the module docstring), or None."""
    if explicit is not None:
        return signing.read_public_key(explicit)
    if TRUSTED_KEY_ENV in os.environ:
        named = os.environ[TRUSTED_KEY_ENV]
        return signing.read_public_key(named) if named else None
    return signing.read_public_key(DEVICE_KEY) if DEVICE_KEY.is_file() else None


def require_signed(path: Path, key: bytes | None, what: str, message: bytes | None = None) -> None:
    """Raise a one-line ``SignatureError`` unless ``path`` is signed by ``key`` (if any).

    ``message``: what the signature covers, from bytes the caller already read and will
    use (a change file's SHA-256 digest), so the file cannot change between check and use.
    """
    if key is None:
        return
    message = signing.signed_message(path) if message is None else message
    try:
        signing.verify_bytes(message, signing.read_signature(path), key)
    except signing.SignatureError as exc:
        raise signing.SignatureError(f"{what} {path} refused: {exc}") from None


def refuse_unsigned_source(path: Path, key: bytes | None) -> None:
    """Checkpoints and bare ONNX files cannot be signed: refused where a key is trusted."""
    if key is not None:
        raise signing.SignatureError(
            f"{path} is not a signed artifact and this device trusts a key; build and sign "
            "one: semedge build … --out DIR && semedge sign DIR --key KEY"
        )


def device_slot(source: Path) -> Path | None:
    """``source`` resolved when it is one of an agent's slots (``ROOT/models/NAME/A``,
    beside the model's ``state.json`` that records its change counter), else None."""
    source = source.resolve()
    model = source.parent
    if source.name in SLOTS and model.parent.name == "models" and (model / STATE).is_file():
        return source
    return None


def refuse_downgrade(
    path: Path, key: bytes | None, what: str, counter: int, slot: Path | None
) -> None:
    """Where ``key`` is trusted, raise a one-line ``Downgrade`` if ``counter`` (a change's
    ``security_counter``) is below the highest the agent installed for the model of
    ``slot`` (``change_counter`` in its state; nothing to compare outside an agent root):
    a replayed old file, though signed.

    The agent's rule is the same: the floor is checked when a change is installed or
    activated, so a change the state names as active on ``slot`` met it then and stays
    valid when a newer file raises the floor (the agent never replaces an active file).
    """
    if key is None or slot is None:
        return
    state = read_state(slot.parent)
    active = state["changes"].get(slot.name, {}).values()
    if path.name in active and path.resolve().parent.parent == slot.parent:
        return
    check_floor(f"{what} {path}", counter, state["change_counter"], slot.parent.name)
