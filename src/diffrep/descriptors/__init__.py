"""Descriptor registry: ``get_descriptor("sscd")``, ``available()``."""
from .base import Descriptor, available, fingerprints_match, get_descriptor, register

__all__ = ["Descriptor", "available", "fingerprints_match", "get_descriptor", "register"]
