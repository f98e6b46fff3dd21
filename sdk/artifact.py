"""Artifacts: what ``semedge build`` writes, the firmware bridge flashes and a runtime loads.

An artifact is a directory (or one ``.tar`` of it) holding ``manifest.json`` and the
payload files it lists (``model.onnx`` or ``model.plan``, plugin ``.so`` files). The
manifest names the model, the base fingerprint, the I/O tensors, the backend and
precision, the SHA-256 and size of every payload file, and -- for TensorRT plans --
the device the plan was built for (``target``). Layout and rules: ``docs/formats.md``.

This module imports neither torch nor onnx (the device agent uses it). Every failure
is an :class:`ArtifactError` with one line saying what is wrong and what to do.
Tar files are read without extracting to inspect them and extracted only after every
member name was checked (regular files, no absolute paths, no ``..``).
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sdk import __version__
from sdk.errors import SemedgeError
from sdk.files import atomic_file, staged_directory

FORMAT = "semedge.artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
REFIT_WEIGHTS = "weights.safetensors"
"""TensorRT artifacts with delta targets: base values of the refittable weights."""
BACKENDS = ("onnxrt", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
PARTS = ("transmitter", "receiver", "chain")
DEVICE_FACTS = ("tensorrt_version", "compute_capability", "cuda_version", "l4t_version")
_REQUIRED = (
    *("format", "format_version", "model", "base_fingerprint", "backend", "precision"),
    *("inputs", "outputs", "files"),
)
_CHUNK = 1 << 20


class ArtifactError(SemedgeError):
    """An artifact that is malformed, tampered with, incomplete or not for this device."""


class ArtifactIncompatibleError(ArtifactError):
    """A well-formed artifact built for another backend, GPU or TensorRT version."""


# ---------------------------------------------------------------- manifest


def make_manifest(
    *,
    name: str,
    model_class: str,
    part: str,
    base_fingerprint: str,
    backend: str,
    precision: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    version: str = "1",
    delta_targets: list[str] | None = None,
    target: dict[str, Any] | None = None,
    source: str | None = None,
    security_counter: int = 0,
) -> dict[str, Any]:
    """A manifest without ``files`` (``write_artifact`` fills that in from the payload).

    ``source`` (the checkpoint or ONNX file it was built from) is recorded so a refusal
    can print the exact rebuild command.
    """
    model = {"name": name, "version": version, "class": model_class, "part": part}
    if source is not None:
        model["source"] = source
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "base_fingerprint": base_fingerprint,
        "backend": backend,
        "precision": precision,
        "inputs": inputs,
        "outputs": outputs,
        "files": {},
        "delta_targets": list(delta_targets or []),
        "target": target,
        "security_counter": security_counter,
        "semedge_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def validate_manifest(manifest: Any, where: str = MANIFEST) -> dict[str, Any]:
    """Check the structure of a parsed manifest; returns it or raises :class:`ArtifactError`."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a semedge artifact manifest (format != {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has format_version {manifest.get('format_version')!r}; this semedge reads "
            f"{FORMAT_VERSION} — upgrade semedge or rebuild the artifact with this one"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{where} lacks {missing}; rebuild the artifact with: semedge build")
    if manifest["backend"] not in BACKENDS:
        raise ArtifactError(f"{where}: unknown backend {manifest['backend']!r} (know {BACKENDS})")
    if manifest["precision"] not in PRECISIONS:
        raise ArtifactError(f"{where}: unknown precision {manifest['precision']!r}")
    files = manifest["files"]
    ok = isinstance(files, dict) and all(
        _safe_name(n)
        and isinstance(e, dict)
        and isinstance(e.get("sha256"), str)
        and isinstance(e.get("size"), int)
        for n, e in files.items()
    )
    if not ok or not files:
        raise ArtifactError(
            f"{where}: 'files' must map relative payload names to {{sha256, size}}; "
            "rebuild the artifact"
        )
    for key in ("inputs", "outputs"):
        specs = manifest[key]
        if not isinstance(specs, list) or not all(
            isinstance(s, dict) and {"name", "shape", "dtype"} <= s.keys() for s in specs
        ):
            raise ArtifactError(f"{where}: '{key}' must be a list of {{name, shape, dtype}}")
    return manifest


def _parse(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where} is not valid JSON ({exc}); rebuild the artifact") from None
    return validate_manifest(manifest, where)


# ---------------------------------------------------------------- reading dir / tar


def _is_tar(path: Path) -> bool:
    return path.is_file() and tarfile.is_tarfile(path)


def _tar_members(tar: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    """Regular-file members by name relative to the artifact root (root or one top folder)."""
    members: dict[str, tarfile.TarInfo] = {}
    for info in tar.getmembers():
        if info.isdir():
            continue
        if not info.isfile() or not _safe_name(info.name):
            raise ArtifactError(
                f"{path}: member {info.name!r} is not a plain relative file; refusing the tar"
            )
        name = str(PurePosixPath(info.name))
        if name in members:
            raise ArtifactError(f"{path}: member {name!r} appears twice; refusing the tar")
        members[name] = info
    roots = [n for n in members if PurePosixPath(n).name == MANIFEST and n.count("/") <= 1]
    if len(roots) != 1:
        raise ArtifactError(f"{path} holds no single {MANIFEST}; it is not a semedge artifact")
    prefix = str(PurePosixPath(roots[0]).parent)
    if prefix == ".":
        return members
    cut = len(prefix) + 1
    return {n[cut:]: i for n, i in members.items() if n.startswith(prefix + "/")}


@contextmanager
def open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """``path`` opened as a tar; a corrupt or truncated one (found while opening or while
    reading a member) is one :class:`ArtifactError`."""
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable tar ({exc}); copy it again") from None
    try:
        with tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArtifactError(f"{path} is truncated or corrupt ({exc}); copy it again") from None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The validated manifest of an artifact directory or ``.tar`` (payload not checked)."""
    path = Path(path)
    if path.is_dir():
        file = path / MANIFEST
        if not file.is_file():
            raise ArtifactError(
                f"{path} has no {MANIFEST}; it is not an artifact — build one with: semedge build"
            )
        return _parse(file.read_bytes(), str(file))
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; build an artifact with: semedge build")
    if not _is_tar(path):
        raise ArtifactError(f"{path} is neither an artifact directory nor a .tar of one")
    with open_tar(path) as tar:
        info = _tar_members(tar, path)[MANIFEST]
        return _parse(_read_member(tar, info).read(), f"{path}:{MANIFEST}")


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    f = tar.extractfile(info)
    assert f is not None  # regular files only (checked in _tar_members)
    return f


def manifest_bytes(path: str | Path) -> bytes:
    """The exact bytes of ``manifest.json`` (what ``manifest.sig`` signs)."""
    path = Path(path)
    read_manifest(path)
    if path.is_dir():
        return (path / MANIFEST).read_bytes()
    with open_tar(path) as tar:
        return _read_member(tar, _tar_members(tar, path)[MANIFEST]).read()


def stream_sha256(stream: IO[bytes]) -> tuple[str, int]:
    """Hex SHA-256 and size of what is left to read in ``stream``."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of one file (streamed)."""
    with open(path, "rb") as f:
        return stream_sha256(f)[0]


def _check_entry(where: str, name: str, entry: Mapping[str, Any], sha: str, size: int) -> None:
    if size != entry["size"]:
        raise ArtifactError(
            f"{where}: {name} is {size} bytes, the manifest says {entry['size']}; "
            "the artifact is truncated or tampered with — copy or rebuild it"
        )
    if sha != entry["sha256"]:
        raise ArtifactError(
            f"{where}: {name} does not match its SHA-256 in the manifest; "
            "the artifact is corrupt or tampered with — copy or rebuild it"
        )


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check the manifest and every payload file's size and SHA-256; returns the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    if path.is_dir():
        for name, entry in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise ArtifactError(
                    f"{path}: payload file {name} is missing; copy the whole artifact again"
                )
            with open(file, "rb") as f:
                _check_entry(str(path), name, entry, *stream_sha256(f))
        return manifest
    with open_tar(path) as tar:
        members = _tar_members(tar, path)
        for name, entry in manifest["files"].items():
            if name not in members:
                raise ArtifactError(
                    f"{path}: payload file {name} is missing from the tar; pack it again"
                )
            _check_entry(str(path), name, entry, *stream_sha256(_read_member(tar, members[name])))
    return manifest


# ---------------------------------------------------------------- writing


def write_artifact(
    directory: str | Path,
    manifest: Mapping[str, Any],
    files: Mapping[str, str | Path | bytes],
) -> Path:
    """Write an artifact directory: payload ``files`` (name -> path or bytes) + manifest.

    Hashes and sizes are computed here and stored under ``files``. The directory is
    assembled beside the target and renamed into place, so a failure (full disk) never
    leaves a half-written artifact under the final name; an existing one is replaced.
    """
    directory = Path(directory)
    bad = [n for n in files if not _safe_name(n) or n in (MANIFEST, SIGNATURE)]
    if bad or not files:
        raise ArtifactError(f"invalid payload names {bad or '(none)'}; use plain relative names")
    try:
        with staged_directory(directory) as tmp:
            entries = {}
            for name, src in files.items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(src, bytes):
                    dst.write_bytes(src)
                else:
                    shutil.copyfile(src, dst)
                with open(dst, "rb") as f:
                    sha, size = stream_sha256(f)
                entries[name] = {"sha256": sha, "size": size}
            full = validate_manifest({**manifest, "files": entries}, "manifest")
            (tmp / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
    except OSError as exc:
        raise ArtifactError(f"cannot write artifact {directory} ({exc}); nothing changed") from None
    return directory


def pack(directory: str | Path, out: str | Path | None = None) -> Path:
    """Verify an artifact directory and write it as one uncompressed ``.tar`` (files at root).

    Members are the manifest first, then ``manifest.sig`` if present, then the payload in
    manifest order, with fixed mtimes/owners so packing twice gives identical bytes.
    """
    directory = Path(directory)
    manifest = verify_artifact(directory)
    out = Path(out) if out else directory.with_name(directory.name + ".tar")
    names = [MANIFEST, *([SIGNATURE] if (directory / SIGNATURE).is_file() else [])]
    names += list(manifest["files"])
    with atomic_file(out) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(str(directory / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with open(directory / name, "rb") as f:
                tar.addfile(info, f)
    return out


def extract(path: str | Path, directory: str | Path) -> Path:
    """Verify a ``.tar`` artifact and extract its manifest, signature and payload files."""
    path, directory = Path(path), Path(directory)
    manifest = verify_artifact(path)
    directory.mkdir(parents=True, exist_ok=True)
    with open_tar(path) as tar:
        members = _tar_members(tar, path)
        for name in [MANIFEST, SIGNATURE, *manifest["files"]]:
            if name not in members:
                continue
            dst = directory / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(dst, "wb") as out:
                shutil.copyfileobj(_read_member(tar, members[name]), out)
    return directory


@contextmanager
def opened(path: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(directory, manifest)`` of a verified artifact; a ``.tar`` is extracted to a temp dir."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        yield path, verify_artifact(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="semedge-artifact-"))
    try:
        extract(path, tmp)
        yield tmp, read_manifest(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- device compatibility


def _version(text: str | None, parts: int) -> tuple[int, ...] | None:
    if not text:
        return None
    nums = [int(n) for n in re.findall(r"\d+", str(text))[:parts]]
    return tuple(nums + [0] * (parts - len(nums)))


def _sm(cc: str | None) -> str:
    return "sm_" + str(cc).replace(".", "") if cc else "no CUDA GPU"


def _rebuild_hint(manifest: Mapping[str, Any], backend: str | None = None) -> str:
    source = manifest.get("model", {}).get("source") or "CKPT"
    backend = backend or manifest["backend"]
    return (
        f"semedge build {source} --backend {backend} --precision {manifest['precision']}"
        " --out DIR (on this device)"
    )


def check_compatible(manifest: Mapping[str, Any], device_facts: Mapping[str, Any]) -> None:
    """Raise :class:`ArtifactIncompatibleError` unless this device can run the artifact.

    ONNX artifacts run anywhere ONNX Runtime does. A TensorRT plan is tied to the GPU's
    compute capability and to the TensorRT version it was built with (major.minor.patch;
    a plan built with the ``VERSION_COMPATIBLE`` flag runs on the same or a newer 10.x).
    ``device_facts`` holds :data:`DEVICE_FACTS` (None = not present), e.g. from
    :func:`local_device_facts`.
    """
    if manifest["backend"] != "trt":
        return
    target = manifest.get("target") or {}
    built_cc, built_trt = target.get("compute_capability"), target.get("tensorrt_version")
    cc, trt = device_facts.get("compute_capability"), device_facts.get("tensorrt_version")
    built = f"{_sm(built_cc)} / TensorRT {built_trt}"
    if not built_cc or not built_trt:
        raise ArtifactIncompatibleError(
            "TensorRT plan manifest lacks target compute_capability/tensorrt_version; "
            f"rebuild with: {_rebuild_hint(manifest)}"
        )
    if not trt or not cc:
        missing = "TensorRT" if not trt else "a CUDA GPU"
        raise ArtifactIncompatibleError(
            f"plan built for {built}; this device has no {missing} — use an ONNX artifact: "
            f"{_rebuild_hint(manifest, 'onnxrt')}"
        )
    want, have = _version(built_trt, 3), _version(trt, 3)
    assert want is not None and have is not None
    if "VERSION_COMPATIBLE" in target.get("builder_flags", []):
        trt_ok = have[0] == want[0] and have >= want
    else:
        trt_ok = have == want
    if _version(built_cc, 2) != _version(cc, 2) or not trt_ok:
        raise ArtifactIncompatibleError(
            f"plan built for {built}; this device is {_sm(cc)} / TensorRT {trt} — "
            f"rebuild with: {_rebuild_hint(manifest)}"
        )


def _libcuda_facts() -> tuple[str | None, str | None]:
    """(compute capability "M.m" of GPU 0, CUDA driver version "M.m") via the driver API."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None, None
    version, count, dev = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    major, minor = ctypes.c_int(), ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None, None
    cuda_version = f"{version.value // 1000}.{version.value % 1000 // 10}"
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None, cuda_version
    cuda.cuDeviceGet(ctypes.byref(dev), 0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
    return f"{major.value}.{minor.value}", cuda_version


def l4t_version(release_file: str | Path = "/etc/nv_tegra_release") -> str | None:
    """Jetson Linux (L4T) version, e.g. ``"36.4.0"`` from ``# R36 (release), REVISION: 4.0``."""
    try:
        text = Path(release_file).read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}" if m else None


def local_device_facts() -> dict[str, str | None]:
    """Facts about this machine that decide whether a plan runs here (None = not present).

    Compute capability and CUDA driver version come from ``libcuda`` via ctypes, the
    TensorRT version from the ``tensorrt`` package if importable, L4T from
    ``/etc/nv_tegra_release`` (Jetson only).
    """
    cc, cuda_version = _libcuda_facts()
    try:
        import tensorrt

        trt_version: str | None = str(tensorrt.__version__)
    except Exception:  # any import failure means "no usable TensorRT"
        trt_version = None
    return {
        "tensorrt_version": trt_version,
        "compute_capability": cc,
        "cuda_version": cuda_version,
        "l4t_version": l4t_version(),
    }


def describe(manifest: Mapping[str, Any]) -> str:
    """One line naming what an artifact is (for ``info`` and logs)."""
    m = manifest["model"]
    where = ""
    if manifest.get("target"):
        t = manifest["target"]
        where = f" for {_sm(t.get('compute_capability'))} / TensorRT {t.get('tensorrt_version')}"
    return (
        f"{m.get('name')} v{m.get('version')} ({m.get('class')} {m.get('part')}) "
        f"{manifest['backend']}/{manifest['precision']}{where}, "
        f"base {manifest['base_fingerprint'][:12]}"
    )


__all__ = [
    "ArtifactError",
    "ArtifactIncompatibleError",
    "check_compatible",
    "describe",
    "extract",
    "file_sha256",
    "local_device_facts",
    "make_manifest",
    "manifest_bytes",
    "opened",
    "pack",
    "read_manifest",
    "validate_manifest",
    "verify_artifact",
    "write_artifact",
]
