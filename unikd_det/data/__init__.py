"""Demo data for the detection plugin: Fashion-MNIST loading, mosaic generation, catalog registration."""
from .fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist_dir, load_fashion_mnist
from .mosaic import generate_mosaic_dataset
from .register import register_fashion_mosaic

__all__ = [
    "FASHION_MNIST_CLASSES",
    "find_fashion_mnist_dir",
    "generate_mosaic_dataset",
    "load_fashion_mnist",
    "register_fashion_mosaic",
]
