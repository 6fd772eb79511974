"""Installs the UniKD toolkit: the shared layer `unikd`, the Detectron2 plugin `unikd_det` and the `classification` package."""
from setuptools import find_packages, setup

setup(
    name="unikd",
    version="0.1.0",
    description="Knowledge distillation toolkit: UniKD for Detectron2 and a classification KD benchmark",
    python_requires=">=3.10",
    packages=find_packages(include=["unikd", "unikd.*", "unikd_det", "unikd_det.*", "classification", "classification.*"]),
    package_data={"classification": ["configs/*/*.yaml", "configs/*/*/*.yaml"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm==1.0.31",  # timm:<name> models (classification/models/external.py)
        "safetensors==0.8.0",  # .safetensors weight files
        "tensorboard==2.21.0",  # TRAIN.TENSORBOARD's event files
        "fvcore",
        "iopath",
        "pycocotools",
        "opencv-python-headless",
        "yacs",
        "PyYAML",
        "tqdm",
        "matplotlib",
        "tabulate",
        "termcolor",
        "cloudpickle",
        "omegaconf>=2.1,<2.4",
        "hydra-core>=1.1",
        "Pillow",
        "packaging",
        "setuptools<81",
    ],
    extras_require={"test": ["pytest>=7"]},
)
