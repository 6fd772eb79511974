"""Demo data for the detection plugin: Fashion-MNIST loading, mosaic generation, catalog registration.

The Fashion-MNIST reader and the mosaic generator need numpy alone (the classification package reads the
same files); catalog registration is exported only when Detectron2 is installed.
"""
from .fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist_dir, load_fashion_mnist
from .mosaic import generate_mosaic_dataset

__all__ = ["FASHION_MNIST_CLASSES", "find_fashion_mnist_dir", "generate_mosaic_dataset", "load_fashion_mnist"]

try:
    import detectron2  # noqa: F401
except ImportError:
    pass
else:
    from .register import register_builtin_datasets, register_fashion_mosaic

    __all__ += ["register_builtin_datasets", "register_fashion_mosaic"]
