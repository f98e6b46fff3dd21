"""semedge: edge-deployment SDK for semantic-communication transceivers on Jetson."""

from pathlib import Path

from setuptools import find_packages, setup

# What each kind of machine runs (docs/deploy.md, "Installing"): a device needs only the
# agent and the ONNX Runtime/TensorRT runtime; training, export and calibration need torch.
BASE = ["numpy>=1.24", "tqdm>=4.60"]
AGENT = ["pyserial>=3.5", "cryptography>=41", "safetensors>=0.4", "onnxruntime>=1.17", "onnx>=1.15"]
"""A device: `semedge agent`, `flash`, `device`, `sdk.Runtime` on ONNX Runtime. No torch.
(onnx: the ONNX Runtime runner reads the weights it switches deltas in from the graph.)"""
JETSON = [*AGENT, "pycuda>=2025.1.2"]
"""A Jetson with TensorRT: TensorRT itself comes from JetPack; pycuda 2025.1.2 is the first
that builds against CUDA 13 (JetPack 7)."""
# torch: loose lower bound only, JetPack ships its own build on the device.
TRAIN = [
    *AGENT,
    "torch>=2.1",
    "onnxscript>=0.1",
    "matplotlib>=3.7",
    "pillow>=9",  # sdk.data: a user's folder of images (calibration, adaptation)
    "scikit-learn>=1.3",
    "scikit-image>=0.21",
    "mlxtend>=0.23",
]
"""A workstation: train, adapt, export, build, calibrate, quickstart (and everything above)."""
DEV = [
    *TRAIN,
    "pytest>=7",
    "hypothesis>=6.80",
    "ruff==0.17.6",
    "mypy==2.4.1",
    "nvidia-cuda-cuobjdump",
    # JetPack 6's CUDA 12.6 compiler, to check the kernels build there (no GPU needed)
    "nvidia-cuda-nvrtc-cu12==12.6.85",
    "nvidia-cuda-nvcc-cu12==12.6.85",
    "nvidia-cuda-runtime-cu12==12.6.77",
]

setup(
    name="semedge",
    version="0.1.0",
    description="Train, adapt, compile and flash semantic-communication transceivers for Jetson",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sdk*", "kernels*", "firmware_bridge*", "calibration*"]),
    package_data={
        "kernels": [
            "**/*.cu",
            "**/*.cuh",
            "**/*.h",
            "**/*.cpp",
            "**/*.json",
            "**/*.md",
            "**/*.yaml",
        ]
    },
    install_requires=BASE,
    extras_require={"agent": AGENT, "jetson": JETSON, "train": TRAIN, "dev": DEV},
    entry_points={"console_scripts": ["semedge=sdk.cli:main"]},
)
