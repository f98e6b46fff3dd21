"""Where on-device adaptation runs and where its result goes.

``semedge adapt zfda|slf`` train on a user's own images (:func:`sdk.data.sample_set`) on
the CPU or a CUDA device (:func:`torch_device`), then hand the delta or update to a
device the way the agent would take it:

* :func:`install_local` (``--install ROOT``, on the device itself): through the agent's
  :class:`~firmware_bridge.slots.SlotStore` (which locks ``state.json`` against the
  agent's own changes) — the model is the one whose running base the file names, the
  signature is checked where the device trusts a key, the file is
  placed atomically and, with ``activate``, switched on in ``state.json``. An app that
  follows the device (:meth:`sdk.Runtime.open_device`) picks it up on its next poll.
* :func:`push` (``--port PORT``, from a host): flashed over the link with the flasher
  (resumable, hash-checked), then activated with the device verbs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge import signing
from firmware_bridge.slots import ChangeError, NoSuchFile, SlotStore, change_kind, read_header
from sdk.errors import SemedgeError

if TYPE_CHECKING:
    import torch


def torch_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:N]`` as a torch device; one-line error where torch sees no GPU."""
    import torch

    if name != "cpu" and not name.startswith("cuda"):
        raise SemedgeError(f"--device {name!r}: choose cpu or cuda (cuda:N for GPU N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SemedgeError(
            f"--device {name}: torch sees no CUDA device here (torch {torch.__version__}); "
            "run with --device cpu or install a CUDA build of torch"
        )
    return torch.device(name)


def check_root(root: str | Path) -> None:
    """One-line error unless ``root`` is a device root (checked before any training)."""
    if not (Path(root) / "models").is_dir():
        raise NoSuchFile(f"{root} is not a device root (no models/ in it); flash a model first")


def install_local(
    root: str | Path,
    path: str | Path,
    *,
    model: str | None = None,
    activate: bool = False,
    trusted_key: bytes | None = None,
) -> str:
    """Install a delta/update file into the device root ``root`` as the agent does; returns
    what changed. Checks name, base and signature before anything is written."""
    path = Path(path)
    change_kind(path.name)
    check_root(root)
    store = SlotStore(root)
    header = read_header(path)
    name = store.pick_model(model, base=header.get("base_fingerprint"))
    store.check_base(name, path.name, header)
    signature = signing.read_signature(path)
    if trusted_key is not None:
        try:
            signing.verify_bytes(signing.signed_message(path), signature, trusted_key)
        except signing.SignatureError as exc:
            raise signing.SignatureError(f"{path.name} refused: {exc}") from None
    store.install_change(name, path, path.name, signature)
    said = f"installed {path.name} for {name} in {root}"
    if not activate:
        return said
    try:
        return f"{said}; {store.apply_change(name, path.name)}"
    except ChangeError as exc:  # the file is on the device: say so, and why it is not on
        raise type(exc)(f"{said}, not activated: {exc}") from None


def push(
    port: str, path: str | Path, *, model: str | None = None, activate: bool = False, baud: int
) -> str:
    """Flash a delta/update file to the device on ``port`` and optionally switch it on."""
    from firmware_bridge import remote
    from firmware_bridge.host import serial_flasher

    flasher = serial_flasher(port, baud)
    try:
        result = flasher.flash(path, model=model)
        said = f"flashed {Path(path).name} to {result['model']} on {port}"
        if activate:
            reply = remote.apply(flasher, Path(path).name, result["model"])
            said = f"{said}; {reply['change']}"
    finally:
        flasher.close()
    return said
