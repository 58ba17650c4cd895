"""Fine-tuning objectives by name. A new objective: one file with an ``@register_objective`` class, one import here."""

from .base import OBJECTIVES, Objective, get_objective, register_objective

from . import classify, lm  # noqa: E402,F401  (registration: one module per objective)

__all__ = ["OBJECTIVES", "Objective", "get_objective", "register_objective"]
