"""Adapter methods by name. A new method: one file with an ``@register_method`` class, one import here."""

from .base import METHODS, AdapterMethod, Trained, get_method, register_method

from . import full, lora, dora  # noqa: E402,F401  (registration: one module per method)

__all__ = ["METHODS", "AdapterMethod", "Trained", "get_method", "register_method"]
