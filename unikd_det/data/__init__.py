"""Demo data for the detection plugin: Fashion-MNIST mosaics and their Detectron2 catalog registration.

The Fashion-MNIST reader both front ends use is `unikd.data.fashion_mnist`.
"""
from .mosaic import generate_mosaic_dataset
from .register import register_builtin_datasets, register_fashion_mosaic

__all__ = ["generate_mosaic_dataset", "register_builtin_datasets", "register_fashion_mosaic"]
