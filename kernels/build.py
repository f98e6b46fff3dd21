"""Compile the kernels: nvcc fatbins (+ resource check), the TensorRT plugin, the
host-emulation library the tests run the same sources through, and the CPU top-K selection
of the torch path.

``python -m kernels.build [--out DIR] [--plugin]`` — fatbins for the architectures the nvcc
in use knows (``nvcc --list-gpu-arch``): sm_87 (Jetson Orin) + compute_87 PTX (JIT for
newer GPUs) always, sm_110 (Jetson Thor) where nvcc is CUDA >= 13 (JetPack 6's CUDA 12.6
does not know it), and the GPU of this machine where there is one. ptxas' own report
(``-Xptxas -v``) is parsed per kernel and architecture; any spill or stack frame (local
memory) is an error, because both kernels are designed to live in registers + shared memory;
where cuobjdump exists (PATH or PyPI ``nvidia-cuda-cuobjdump``) the SASS in the fatbin is
checked the same way (STACK, LOCAL). :func:`build_cubins_cuda12` repeats the check with
JetPack 6's own compiler (NVRTC + ptxas 12.6 from PyPI), which needs no GPU and no CUDA 12
install.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import importlib.util
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from sdk.errors import SemedgeError
from sdk.files import atomic_file

ROOT = Path(__file__).resolve().parent
KERNELS = {
    "topk_memory": ROOT / "topk_memory" / "topk_memory.cu",
    "sparse_delta": ROOT / "sparse_delta" / "sparse_delta.cu",
}
ORIN, THOR = 87, 110  # compute capabilities: Jetson Orin (JetPack 6 and 7), Thor (JetPack 7)
PLUGIN_SOURCES = (
    ROOT / "topk_memory" / "topkMemoryPlugin.cpp",
    ROOT / "topk_memory" / "topkMemoryLaunch.cu",
)
PLUGIN_LIBRARY = "libsemedge_plugins.so"
TOPK_BLOCK = 128  # threads per query row on the GPU (compiled in; launches must match)
TENSORRT_INCLUDES = (
    "/usr/include/aarch64-linux-gnu",
    "/usr/include/x86_64-linux-gnu",
    "/usr/include",
    "/usr/local/tensorrt/include",
)


class KernelBuildError(SemedgeError):
    """A compiler is missing, a kernel failed to compile, or it spills / uses local memory."""


@dataclass(frozen=True)
class Resources:
    """ptxas' report for one kernel on one architecture."""

    kernel: str
    arch: str
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int

    @property
    def uses_local_memory(self) -> bool:
        return self.stack_bytes > 0 or self.spill_store_bytes > 0 or self.spill_load_bytes > 0


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(report: str) -> list[Resources]:
    """Resources per (kernel, arch) from ``nvcc -Xptxas -v`` output."""
    found: list[Resources] = []
    current: tuple[str, str] | None = None
    frame: tuple[int, int, int] | None = None
    for line in report.splitlines():
        if m := _ENTRY.search(line):
            current, frame = (m.group(1), m.group(2)), None
        elif (m := _FRAME.search(line)) and current:
            frame = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        elif (m := _USED.search(line)) and current and frame:
            smem = _SMEM.search(line)
            found.append(
                Resources(
                    current[0],
                    current[1],
                    int(m.group(1)),
                    *frame,
                    int(smem.group(1)) if smem else 0,
                )
            )
            current = None
    return found


def _pypi_nvidia(relative: str) -> Path | None:
    """``relative`` inside an installed NVIDIA PyPI package (``nvidia/<package>/...``)."""
    spec = importlib.util.find_spec("nvidia")
    for folder in spec.submodule_search_locations or [] if spec else []:
        for candidate in sorted(Path(folder).glob(relative)):
            return candidate
    return None


def find_cuobjdump() -> str | None:
    """cuobjdump from PATH or from the PyPI package ``nvidia-cuda-cuobjdump``."""
    found = shutil.which("cuobjdump") or _pypi_nvidia("*/bin/cuobjdump")
    return str(found) if found else None


_ARCH = re.compile(r"^arch = (sm_\d+)")
_FUNCTION = re.compile(r"^\s*Function (\w+):")
_FIELDS = re.compile(r"(\w+(?:\[\d+\])?):(\d+)")


def binary_resources(fatbin: Path) -> dict[tuple[str, str], dict[str, int]]:
    """Resource usage per (kernel, arch) read from the compiled binary by cuobjdump.

    A cross-check of ptxas' report on the actual SASS in the fatbin (REG, STACK, SHARED,
    LOCAL, ...). Empty when cuobjdump is not available.
    """
    tool = find_cuobjdump()
    if tool is None:
        return {}
    text = _run([tool, "--dump-resource-usage", str(fatbin)])
    usage: dict[tuple[str, str], dict[str, int]] = {}
    arch, function = "", ""
    for line in text.splitlines():
        if m := _ARCH.match(line):
            arch = m.group(1)
        elif m := _FUNCTION.match(line):
            function = m.group(1)
        elif function and "REG:" in line:
            usage[(function, arch)] = {k: int(v) for k, v in _FIELDS.findall(line)}
            function = ""
    return usage


def _tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KernelBuildError(f"{name} not found on PATH, needed to {why}; install it or fix PATH")
    return path


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as error:  # e.g. $CXX names a compiler that is not there
        why = f"cannot run {command[0]}: {error.strerror}; fix $CXX or PATH"
        raise KernelBuildError(why) from error
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise KernelBuildError(f"{Path(command[0]).name} failed: {' | '.join(tail)}")
    return done.stdout + done.stderr


@functools.cache
def known_architectures(nvcc: str) -> frozenset[int]:
    """Compute capabilities ``nvcc --list-gpu-arch`` names, e.g. {..., 87, 90, 100, 110}."""
    return frozenset(
        int(a) for a in re.findall(r"compute_(\d+)\b", _run([nvcc, "--list-gpu-arch"]))
    )


def device_compute_capability() -> int | None:
    """Compute capability of this machine's GPU 0 (87 on Orin, 110 on Thor), else None.

    Asked of the CUDA driver (``libcuda.so.1``) through ctypes, so it needs no pycuda.
    """
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    failed = (
        driver.cuInit(0)
        or driver.cuDeviceGetCount(ctypes.byref(count))
        or count.value == 0
        or driver.cuDeviceGetAttribute(ctypes.byref(major), 75, 0)  # COMPUTE_CAPABILITY_MAJOR
        or driver.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0)  # COMPUTE_CAPABILITY_MINOR
    )
    return None if failed else 10 * major.value + minor.value


def gencodes(known: frozenset[int] | set[int], device: int | None = None) -> list[str]:
    """``-gencode`` values for an nvcc that knows ``known`` and a build machine's GPU.

    sm_87 and compute_87 PTX always (Orin; the PTX lets newer GPUs JIT), sm_110 only where
    nvcc knows it (CUDA >= 13, JetPack 7), plus ``device`` when building on a GPU nvcc
    knows. A device nvcc does not know (Thor with CUDA 12.6) is a one-line error.
    """
    if ORIN not in known:
        raise KernelBuildError(
            f"this nvcc does not know sm_{ORIN} (it knows up to sm_{max(known, default=0)}); "
            "install a CUDA toolkit >= 11.4 (JetPack 5 or newer)"
        )
    targets = [ORIN] + ([THOR] if THOR in known else [])
    if device is not None and device not in targets:
        if device not in known:
            raise KernelBuildError(
                f"this GPU is sm_{device}, which this nvcc does not know (newest: "
                f"sm_{max(known)}); build with the CUDA toolkit of the device's JetPack "
                f"(sm_{THOR} needs CUDA >= 13, JetPack 7)"
            )
        targets.append(device)
    return [f"arch=compute_{a},code=sm_{a}" for a in targets] + [
        f"arch=compute_{ORIN},code=compute_{ORIN}"
    ]


Device = int | None | Literal["auto"]


def _gencode_flags(nvcc: str, device: Device) -> list[str]:
    """``-gencode`` flags; ``device="auto"`` asks the driver for this machine's GPU."""
    cc = device_compute_capability() if device == "auto" else device
    return [flag for code in gencodes(known_architectures(nvcc), cc) for flag in ("-gencode", code)]


def _require_registers_only(name: str, usage: list[Resources], extra: list[Resources]) -> None:
    """Raise unless every kernel lives in registers + shared memory (no stack, no spills)."""
    if not usage:
        raise KernelBuildError(
            f"no ptxas resource report for {name}; is ptxas' -v output format new? "
            "Check kernels/build.py:parse_ptxas"
        )
    bad = [r for r in usage if r.uses_local_memory] + extra
    if bad:
        raise KernelBuildError(
            "local memory / spills in "
            + ", ".join(
                f"{r.kernel}@{r.arch} (stack "
                f"{r.stack_bytes} B, spill {r.spill_store_bytes}/{r.spill_load_bytes} B)"
                for r in bad
            )
            + "; reduce register pressure or private arrays"
        )


def build_fatbins(out: Path, device: Device = "auto") -> dict[str, list[Resources]]:
    """Compile every kernel to ``out/<kernel>.fatbin``; raise on spills or local memory.

    Architectures: :func:`gencodes` for the nvcc on PATH and ``device`` (a compute
    capability such as 87; ``"auto"``: this machine's GPU if any; None: no device).
    """
    nvcc = _tool("nvcc", "compile the CUDA kernels")
    gencode = _gencode_flags(nvcc, device)
    out.mkdir(parents=True, exist_ok=True)
    usage: dict[str, list[Resources]] = {}
    for name, source in KERNELS.items():
        report = _run(
            [
                nvcc,
                "-fatbin",
                "-O3",
                "-std=c++17",
                f"-DTOPK_BLOCK={TOPK_BLOCK}",
                *gencode,
                "-Xptxas",
                "-v",
                "-o",
                str(out / f"{name}.fatbin"),
                str(source),
            ]
        )
        usage[name] = parse_ptxas(report)
        binary = binary_resources(out / f"{name}.fatbin")
        _require_registers_only(
            name,
            usage[name],
            [
                Resources(kernel, arch, f["REG"], f["STACK"], f["LOCAL"], 0, f["SHARED"])
                for (kernel, arch), f in binary.items()
                if f.get("STACK", 0) or f.get("LOCAL", 0)
            ],
        )
    return usage


CUDA12_PACKAGES = (
    "nvidia-cuda-nvrtc-cu12==12.6.85 nvidia-cuda-nvcc-cu12==12.6.85 "
    "nvidia-cuda-runtime-cu12==12.6.77"
)


def cuda12_toolchain() -> tuple[Path, Path, Path]:
    """(libnvrtc.so.12, ptxas, CUDA include folder) of JetPack 6's CUDA 12.x, from PyPI."""
    found = [
        _pypi_nvidia(p)
        for p in ("cuda_nvrtc/lib/libnvrtc.so.12", "cuda_nvcc/bin/ptxas", "cuda_runtime/include")
    ]
    if None in found:
        raise KernelBuildError(
            "CUDA 12 NVRTC/ptxas/headers not installed; pip install " + CUDA12_PACKAGES
        )
    return found[0], found[1], found[2]  # type: ignore[return-value]


def nvrtc_ptx(library: Path, source: Path, options: list[str]) -> str:
    """Compile ``source`` to PTX with the NVRTC shared library ``library`` (ctypes)."""
    nvrtc = ctypes.CDLL(str(library))
    program = ctypes.c_void_p()
    text = source.read_bytes()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(program), text, str(source).encode(), 0, None, None):
        raise KernelBuildError(f"NVRTC could not create a program for {source.name}")
    try:
        encoded = [o.encode() for o in options]
        status = nvrtc.nvrtcCompileProgram(
            program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded)
        )
        size = ctypes.c_size_t()
        if status:
            nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(program, log)
            lines = [line for line in log.value.decode().splitlines() if "error" in line]
            raise KernelBuildError(f"NVRTC failed on {source.name}: {' | '.join(lines[:3])}")
        nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(program, ptx)
        return ptx.value.decode()
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def build_cubins_cuda12(out: Path, arch: int = ORIN) -> dict[str, list[Resources]]:
    """Compile every kernel as JetPack 6 (CUDA 12.6) would: NVRTC to PTX, its ptxas to SASS.

    nvcc 13's PTX carries an ISA version ptxas 12.6 refuses, so the PTX must come from
    NVRTC of the same release. Raises on spills or local memory, like :func:`build_fatbins`.
    """
    library, ptxas, include = cuda12_toolchain()
    out.mkdir(parents=True, exist_ok=True)
    usage: dict[str, list[Resources]] = {}
    for name, source in KERNELS.items():
        ptx = out / f"{name}.cuda12.ptx"
        options = [f"--gpu-architecture=compute_{arch}", "-std=c++17", f"-I{include}"]
        ptx.write_text(nvrtc_ptx(library, source, [*options, f"-DTOPK_BLOCK={TOPK_BLOCK}"]))
        cubin = str(out / f"{name}.sm_{arch}.cubin")
        usage[name] = parse_ptxas(
            _run([str(ptxas), f"-arch=sm_{arch}", "-v", str(ptx), "-o", cubin])
        )
        _require_registers_only(name, usage[name], [])
    return usage


def find_tensorrt_include(extra: str | None = None) -> Path | None:
    """Directory holding NvInfer.h (``extra`` first, then the Jetson/desktop defaults)."""
    for folder in ([extra] if extra else []) + list(TENSORRT_INCLUDES):
        if (Path(folder) / "NvInfer.h").is_file():
            return Path(folder)
    return None


PLUGIN_EXPORTS = ROOT / "topk_memory" / "libsemedge_plugins.map"
WARNINGS = ("-Wall", "-Wextra")


def build_plugin(
    out: Path, tensorrt_include: str | None = None, device: Device = "auto", strict: bool = False
) -> Path:
    """Compile the ``TopKMemory`` TensorRT plugin into ``out/libsemedge_plugins.so``.

    Exports only ``getCreators`` and ``setLoggerFinder`` (hidden visibility + the version
    script ``libsemedge_plugins.map``). Needs no TensorRT library at link time: TensorRT
    calls in through the interfaces. ``strict`` turns warnings into errors (CI).
    """
    include = _tensorrt_include(tensorrt_include)
    nvcc = _tool("nvcc", "compile the TensorRT plugin")
    out.mkdir(parents=True, exist_ok=True)
    library = out / PLUGIN_LIBRARY
    host_flags = ",".join(
        ["-fPIC", "-fvisibility=hidden", *WARNINGS, *(["-Werror"] if strict else [])]
    )
    _run(
        [
            nvcc,
            "-shared",
            "-O3",
            "-std=c++17",
            "-Xcompiler",
            host_flags,
            f"-Xlinker=--version-script={PLUGIN_EXPORTS}",
            f"-DTOPK_BLOCK={TOPK_BLOCK}",
            *_gencode_flags(nvcc, device),
            f"-isystem={include}",
            *map(str, PLUGIN_SOURCES),
            "-o",
            str(library),
        ]
    )
    return library


def build_plugin_emulated(out: Path, tensorrt_include: str | None = None) -> Path:
    """The plugin with its launcher on the host emulation: ``enqueue`` runs the kernels on the
    CPU (host pointers). g++, ``-Wall -Wextra -Werror``, same exports as the real library.

    For the harness that drives the plugin as TensorRT would (tests/kernels/test_plugin.py).
    """
    include = _tensorrt_include(tensorrt_include)
    library = (
        out
        / f"libsemedge_plugins_emulated_{hashlib.sha256(str(include).encode()).hexdigest()[:8]}.so"
    )
    out.mkdir(parents=True, exist_ok=True)
    command = [
        *host_compiler("compile the emulated plugin"),
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-shared",
        "-pthread",
        "-fvisibility=hidden",
        *WARNINGS,
        "-Werror",
        "-Wno-unknown-pragmas",  # the kernels' #pragma unroll
        "-Wl,-z,defs",
        f"-Wl,--version-script={PLUGIN_EXPORTS}",
        f"-DTOPK_BLOCK={TOPK_BLOCK}",
        # system headers: warnings inside TensorRT's own inline code are not ours
        f"-isystem{include}",
        *(f"-isystem{folder}" for folder in cuda_includes()),
        str(PLUGIN_SOURCES[0]),
        str(ROOT / "emulation" / "plugin_launch.cpp"),
    ]
    return _link(command, library)


def _tensorrt_include(extra: str | None) -> Path:
    include = find_tensorrt_include(extra)
    if include is None:
        raise KernelBuildError(
            "TensorRT headers (NvInfer.h) not found; build the plugin on a "
            "Jetson with TensorRT installed or pass --tensorrt-include DIR"
        )
    return include


def cuda_includes() -> list[Path]:
    """Folders with cuda_runtime_api.h and what it includes (the TensorRT headers need it) for
    host compiles: the CUDA 12 headers from PyPI, else the include folder beside nvcc."""
    found = [_pypi_nvidia(f"{package}/include") for package in ("cuda_runtime", "cuda_nvcc")]
    if None in found:
        return [Path(_tool("nvcc", "find the CUDA headers")).resolve().parent.parent / "include"]
    return [folder for folder in found if folder]


COUNTING_FLAGS = (  # every load/store becomes a call the emulation counts (traffic.h)
    "-fsanitize=kernel-address",
    "--param=asan-instrumentation-with-call-threshold=0",
    "--param=asan-stack=0",
    "--param=asan-globals=0",
    "-DEMULATION_COUNT_BYTES",
)


def build_emulation(
    out: Path,
    block: int = 32,
    shared_k: int = 16,
    count_bytes: bool = False,
    candidates: int = 2048,
) -> Path:
    """Compile the unchanged kernel sources with g++ against the host-emulation layer.

    ``block`` (TOPK_BLOCK) and ``shared_k`` (TOPK_SHARED_K) are compile-time: small values
    keep the emulation fast (one OS thread per CUDA thread) and let small tests reach both
    the shared-memory path and the global-workspace fallback of the top-K kernel; a small
    ``candidates`` (TOPK_CANDIDATES) sends rows with many scores in the threshold's top digit
    down the path that keeps selecting on the score row in global memory.
    ``count_bytes`` builds the variant that counts the kernels' global-memory loads and
    stores (``emulation/traffic.h``; several times slower).
    """
    command = [
        *host_compiler("compile the kernel emulation"),
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-shared",
        "-pthread",
        "-Wl,-z,defs",
        # Each build has its own sizes: keep its statics (__shared__ arrays) and symbols to
        # itself when several variants are loaded into one process.
        "-fno-gnu-unique",
        "-Wl,-Bsymbolic",
        f"-DTOPK_BLOCK={block}",
        f"-DTOPK_SHARED_K={shared_k}",
        f"-DTOPK_CANDIDATES={candidates}",
        *(COUNTING_FLAGS if count_bytes else ()),
        str(ROOT / "emulation" / "entry.cpp"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    variant = "_counting" if count_bytes else ""
    name = f"kernels_emulated_b{block}_k{shared_k}_c{candidates}{variant}.so"
    return _link(command, out / name)


def build_cpu_select(out: Path, replace: bool = False) -> Path:
    """Compile ``topk_memory/topk_select_cpu.cpp`` into ``out`` unless already there.

    The file name hashes the source, the compiler command and the machine type, so an
    edited source, another compiler or a home folder shared with an ARM board builds a new
    library. ``out`` must be private (see :func:`private_dir`): the library is loaded into
    the process. ``replace`` rebuilds a library that exists but would not load.
    """
    source = ROOT / "topk_memory" / "topk_select_cpu.cpp"
    command = [*host_compiler("compile the CPU top-K selection"), "-std=c++17", "-O3"]
    command += ["-fPIC", "-shared", str(source)]
    recipe = source.read_bytes() + " ".join(command).encode() + platform.machine().encode()
    library = private_dir(out) / f"topk_select_cpu_{hashlib.sha256(recipe).hexdigest()[:16]}.so"
    if library.exists() and not replace:
        return library
    return _link(command, library)


def cache_dir() -> Path:
    """Where built kernels live: ``$SEMEDGE_KERNEL_CACHE``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``semedge/kernels`` — per user, never a shared temp folder."""
    if os.environ.get("SEMEDGE_KERNEL_CACHE"):
        return Path(os.environ["SEMEDGE_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "semedge" / "kernels"


def private_dir(folder: Path) -> Path:
    """Create ``folder`` (mode 0700) or check that it is ours and nobody else can write it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise KernelBuildError(
            f"{folder} belongs to another user or others can write to it; a library loaded "
            "from there could be anyone's: remove it or set SEMEDGE_KERNEL_CACHE"
        )
    return folder


def host_compiler(why: str) -> list[str]:
    """``$CXX`` (may carry a launcher, e.g. ``ccache g++``) or g++ from PATH."""
    if os.environ.get("CXX"):
        return shlex.split(os.environ["CXX"])
    return [_tool("g++", why)]


def _link(command: list[str], library: Path) -> Path:
    """Run ``command -o <temporary>`` and rename the result to ``library``.

    Each build writes its own temporary file in the same folder (``sdk.files.atomic_file``),
    so threads or processes building at once never load a half-written library or delete
    each other's output.
    """
    with atomic_file(library, mode=0o777) as partial:
        _run([*command, "-o", str(partial)])
    return library


def resource_table(usage: dict[str, list[Resources]]) -> str:
    """Markdown table of the ptxas report (used in docs/kernels.md)."""
    rows = [
        "| kernel | arch | registers | stack B | spill st/ld B | smem B |",
        "|---|---|---|---|---|---|",
    ]
    for items in usage.values():
        rows += [
            f"| {r.kernel} | {r.arch} | {r.registers} | {r.stack_bytes} | "
            f"{r.spill_store_bytes}/{r.spill_load_bytes} | {r.shared_bytes} |"
            for r in items
        ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kernels.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder for fatbins / plugin (default: $SEMEDGE_KERNEL_CACHE, else "
        "~/.cache/semedge/kernels)",
    )
    parser.add_argument("--plugin", action="store_true", help="also build the TensorRT plugin")
    parser.add_argument("--tensorrt-include", help="folder with NvInfer.h (default: search)")
    parser.add_argument("--json", action="store_true", help="print the resource report as JSON")
    parser.add_argument(
        "--jetpack6",
        action="store_true",
        help="also compile every kernel with CUDA 12.6's NVRTC + ptxas for sm_87 (PyPI "
        "packages of the dev extra) and add its report",
    )
    args = parser.parse_args(argv)
    args.out = args.out or cache_dir()
    try:
        usage = build_fatbins(args.out)
        if args.jetpack6:
            for name, found in build_cubins_cuda12(args.out / "cuda12").items():
                usage[name] += [replace(r, arch=f"{r.arch} (CUDA 12.6)") for r in found]
        if args.plugin:
            print(f"plugin: {build_plugin(args.out, args.tensorrt_include)}", file=sys.stderr)
    except SemedgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps({k: [asdict(r) for r in v] for k, v in usage.items()}, indent=1))
    else:
        print(resource_table(usage))
        print(f"fatbins in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
