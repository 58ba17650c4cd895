"""Options shared by several commands, defined once (help text and default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..options import option
from ..outputs import OVERWRITE_HELP

TASK_HELP = ("(required) task name (sst2, rte, cb, copa, mrpc, emoc, agnews, boolq) or a task file (.yaml/.json)")
DTYPE_HELP = "auto (the checkpoint's own) | float32 | bfloat16 | float16"


def dtype_option(default: str = "auto"):
    return option(default, DTYPE_HELP)


def overwrite_option():
    return option(False, OVERWRITE_HELP, recorded=False)  # not part of a run's identity: a resume may add it


def device_option():
    return option(None, "cpu, cuda, cuda:1, mps ... (default: cuda:LOCAL_RANK under torchrun / accelerate launch "
                        "when CUDA is there, else cpu)")


def device_map_option():
    return option(None, "spread the model over devices with accelerate: auto (or balanced, sequential), or a JSON "
                        "file mapping module names to a GPU index, 'cpu' or 'disk'", metavar="auto|FILE.json")


def max_memory_option():
    return option(None, "with --device-map auto: memory per device, as transformers' max_memory",
                  metavar="0=20GiB,cpu=60GiB")


@dataclass(frozen=True)
class Recipe:
    """One command: its config dataclass (the flags are generated from it), the function that runs it,
    and the function that turns its result into the lines the CLI prints."""

    config: type
    run: Callable[[Any, bool], Any]  # (config, progress) -> result
    report: Callable[[Any, Any], str]  # (result, config) -> text ("" prints nothing)
    help: str
    description: str | None = None


@dataclass
class ICLCommon:
    """The options every ICL command shares (``icl eval`` and ``icl search`` extend it)."""

    model: str | None = option(None, "(required) hub id, local directory or alias", required=True)
    task: str | None = option(None, TASK_HELP, required=True)
    shots: int = option(4, "demonstrations per class (default 4)")
    seed: int = option(0, "fixes the demonstrations and the sampled examples")
    batch_size: int = option(16, "examples per forward pass (the demonstrations' cache is shared by the batch)")
    tokenizer: str | None = option(None, "tokenizer to use (default: the model's); 'gpt2-offline' = real GPT-2 BPE")
    data_dir: str | None = option(None, "local data (default $LEANTUNE_DATA_DIR, else ../shared/data, else hub)")
    dtype: str = dtype_option()
    device: str | None = device_option()
    device_map: str | dict | None = device_map_option()  # a dict: a library call's own map
    max_memory: str | None = max_memory_option()
    trust_remote_code: bool = option(False, "allow the model repo's own Python code (transformers' trust_remote_code)")
