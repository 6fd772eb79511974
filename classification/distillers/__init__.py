"""Distillers registered by name (DISTILLER.NAME). Importing a module registers its distiller or loss term."""
from . import at, crd, dkd, fitnet, kd, mlkd, nkd, ofd, reviewkd, rkd, sp, slkd, terms, unikd, vanilla  # noqa: F401
from .base import Distiller, get_distiller_class, register_distiller, registered_distillers

__all__ = ["Distiller", "get_distiller_class", "register_distiller", "registered_distillers"]
