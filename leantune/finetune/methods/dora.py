"""``dora``: LoRA plus a trained magnitude per output row (Liu et al. 2024).

The targeted rows are rescaled by ``magnitude / ||W + scale*B@A||`` (norm detached, as PEFT and the DoRA
paper do); the computation lives in :class:`~leantune.finetune.methods.lora.LoraRows` (``dora=True``).
"""

from __future__ import annotations

from .base import register_method
from .lora import Lora


@register_method
class Dora(Lora):
    name = "dora"
    dora = True
    peft_exportable = False  # magnitudes on slices have no PEFT form; leantune's adapter holds them
