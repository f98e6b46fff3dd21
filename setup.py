"""semedge: edge-deployment SDK for semantic-communication transceivers on Jetson."""

from pathlib import Path

from setuptools import find_packages, setup

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
    # torch: loose lower bound only, JetPack ships its own build on the device.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "safetensors>=0.4",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "onnxscript>=0.1",
        "pyserial>=3.5",
        "cryptography>=41",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=9",  # sdk.data: a user's folder of calibration images
        "scikit-learn>=1.3",
        "scikit-image>=0.21",
        "mlxtend>=0.23",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "hypothesis>=6.80",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "nvidia-cuda-cuobjdump",
        ],
        "jetson": ["pycuda>=2022.1"],
    },
    entry_points={"console_scripts": ["semedge=sdk.cli:main"]},
)
