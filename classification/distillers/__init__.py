"""Distillers registered by name (DISTILLER.NAME). Importing a module registers its distiller."""
from . import dkd, kd, slkd, unikd, vanilla  # noqa: F401  (registration)
from .base import Distiller, get_distiller_class, register_distiller, registered_distillers

__all__ = ["Distiller", "get_distiller_class", "register_distiller", "registered_distillers"]
