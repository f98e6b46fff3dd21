"""Ed25519 signatures for artifacts and deltas (``cryptography``; no torch).

* An artifact's ``manifest.sig`` is the 64-byte Ed25519 signature over the exact bytes
  of its ``manifest.json``. The manifest holds the SHA-256 of every payload file, so the
  signature covers the whole artifact, and the agent can check it at BEGIN — before
  any data moves — then check that the received payload matches the manifest.
* A delta file ``X.delta.safetensors`` is signed by ``X.delta.safetensors.sig`` over the
  32-byte SHA-256 digest of the file (checkable at BEGIN from the announced hash;
  the received bytes must then hash to it).

Keys are raw 32-byte Ed25519 keys stored as hex text: ``KEYBASE.key`` (private, mode
0600) and ``KEYBASE.pub``. Both look alike, so :func:`sign` refuses a ``.pub`` file and a
key that does not belong to the ``.pub`` beside it, and checks every new signature before
it replaces the old one: a wrong key never costs a good signature.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from sdk import artifact
from sdk.errors import SemedgeError
from sdk.files import atomic_file, write_bytes, write_text

SIGNATURE_BYTES = 64


class SignatureError(SemedgeError):
    """A missing, malformed or non-matching signature or key."""


def keygen(base: str | Path) -> tuple[Path, Path]:
    """Write a new key pair ``base.key`` / ``base.pub``; refuses to overwrite a key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key_path, pub_path = Path(f"{base}.key"), Path(f"{base}.pub")
    if key_path.exists():
        raise SignatureError(f"{key_path} exists; choose another --out or delete it first")
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes_raw()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    write_text(pub_path, pub.hex() + "\n")
    write_text(key_path, raw.hex() + "\n", mode=0o600)  # last: its presence means "done"
    return key_path, pub_path


def _read_key(path: str | Path, what: str) -> bytes:
    try:
        raw = bytes.fromhex(Path(path).read_text().strip())
    except (OSError, ValueError) as exc:
        raise SignatureError(
            f"cannot read {what} {path} ({exc}); create one: semedge keygen"
        ) from None
    if len(raw) != 32:
        raise SignatureError(f"{path} is not a raw Ed25519 {what} (32 bytes hex)")
    return raw


def sign_bytes(message: bytes, key_path: str | Path) -> bytes:
    """Ed25519 signature of ``message`` by the private key in ``key_path``, verified against
    its public key (the ``.pub`` beside it when there is one) before it is returned."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key_path = Path(key_path)
    if key_path.suffix == ".pub":
        raise SignatureError(
            f"{key_path} is a public key (give it to agents as --trusted-key); sign with the "
            f"private key {key_path.with_suffix('.key')} from semedge keygen"
        )
    key = Ed25519PrivateKey.from_private_bytes(_read_key(key_path, "private key"))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    partner = key_path.with_suffix(".pub")
    if partner != key_path and partner.is_file() and read_public_key(partner) != public:
        raise SignatureError(
            f"{key_path} is not the private key of {partner} (a public key given as --key?); "
            "sign with the .key file from semedge keygen"
        )
    signature = key.sign(message)
    verify_bytes(message, signature, public)
    return signature


def verify_bytes(message: bytes, signature: bytes | None, public_key: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is valid for ``message``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature:
        raise SignatureError("unsigned, but this device requires signatures; sign: semedge sign")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise SignatureError(
            "signature does not match the trusted key (tampered or wrong key)"
        ) from None


def read_public_key(path: str | Path) -> bytes:
    return _read_key(path, "public key")


DELTA_SUFFIX, UPDATE_SUFFIX = ".delta.safetensors", ".update.safetensors"


def is_weight_change(path: str | Path) -> bool:
    """A ZFDA delta or an SLF update package: one file, signed over its SHA-256 (``FILE.sig``)."""
    return str(path).endswith((DELTA_SUFFIX, UPDATE_SUFFIX))


def signed_message(path: str | Path) -> bytes:
    """What the signature of ``path`` covers: manifest bytes, or a delta's SHA-256 digest."""
    if is_weight_change(path):
        return hashlib.sha256(Path(path).read_bytes()).digest()
    return artifact.manifest_bytes(path)


def read_signature(path: str | Path) -> bytes | None:
    """The signature shipped with an artifact (dir or .tar) or beside a delta; None if none.

    Anything there that cannot be an Ed25519 signature (not 64 bytes, not a file) is a
    :class:`SignatureError`, not "unsigned"."""
    path = Path(path)
    if is_weight_change(path) or path.is_dir():
        sig = Path(f"{path}.sig") if is_weight_change(path) else path / artifact.SIGNATURE
        if not sig.exists():
            return None
        signature = sig.read_bytes() if sig.is_file() else b""
    else:
        with artifact.open_tar(path) as tar:
            members = [
                info
                for info in tar.getmembers()
                if info.name.lstrip("./").split("/")[-1] == artifact.SIGNATURE
            ]
            if not members:
                return None
            f = tar.extractfile(members[0])
            signature = f.read() if f else b""
        sig = path / artifact.SIGNATURE
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(
            f"{sig} is not an Ed25519 signature ({SIGNATURE_BYTES} bytes); sign again: semedge sign"
        )
    return signature


def sign(path: str | Path, key_path: str | Path) -> Path:
    """Sign an artifact directory, ``.tar`` (rewritten with the signature) or delta file."""
    path = Path(path)
    if is_weight_change(path):
        from sdk.delta import load_change  # numpy + safetensors: still no torch

        load_change(path)  # never sign a file that no device would accept
    else:
        artifact.verify_artifact(path)
    signature = sign_bytes(signed_message(path), key_path)
    if is_weight_change(path):
        return write_bytes(Path(f"{path}.sig"), signature)
    if path.is_dir():
        return write_bytes(path / artifact.SIGNATURE, signature)
    return _add_to_tar(path, signature)


def _add_to_tar(path: Path, signature: bytes) -> Path:
    """Rewrite a tar artifact with ``manifest.sig`` replaced (atomically)."""
    with (
        atomic_file(path) as tmp,
        tarfile.open(path) as src,
        tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for info in src.getmembers():
            if info.name.lstrip("./").split("/")[-1] == artifact.SIGNATURE:
                continue
            dst.addfile(info, src.extractfile(info) if info.isfile() else None)
        sig = tarfile.TarInfo(artifact.SIGNATURE)
        sig.size, sig.mode = len(signature), 0o644
        dst.addfile(sig, io.BytesIO(signature))
    return path
