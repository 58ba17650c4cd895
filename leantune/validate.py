"""Option checks where input enters: after the command line and ``--config`` are merged, before any work.

One table says what each numeric or list option may hold; every command's options go through it, so a
bad value is one line naming the flag (``leantune: error: --top-k must be an integer >= 1, got 0``)
instead of a traceback from deep inside torch or transformers, or a silently empty run.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .errors import LeantuneError
from .outputs import check_outputs, flag


def _show(x) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Number:
    """An int or a finite float within [low, high] (``low_open``: strictly above ``low``)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def what(self) -> str:
        return "an integer" if self.kind is int else "a finite number"

    def interval(self) -> str:
        """``[0, 1)``, ``(0, inf)``, ..."""
        low = "-inf" if self.low is None else _show(self.low)
        high = "inf" if self.high is None else _show(self.high)
        return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}" \
               f"{')' if self.high_open or self.high is None else ']'}"

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.what} in {self.interval()}"
        if self.low is not None:
            return f"{self.what} {'>' if self.low_open else '>='} {_show(self.low)}"
        return self.what

    def ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):  # bool is an int to Python, not to a user
            return False
        if self.kind is int and not isinstance(v, int):
            return False
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def check(self, dest: str, v) -> None:
        if not self.ok(v):
            raise LeantuneError(f"{flag(dest)} must be {self.describe()}, got {v!r}")


@dataclass(frozen=True)
class NumberList:
    """A comma-separated list (or a config-file list) whose items each satisfy ``item``."""

    item: Number
    example: str

    def check(self, dest: str, v) -> None:
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not items:
            raise LeantuneError(f"{flag(dest)} must be a comma-separated list such as {self.example}, got {v!r}")
        for raw in items:
            try:
                x = self.item.kind(raw.strip()) if isinstance(raw, str) else raw
            except ValueError:
                raise LeantuneError(f"{flag(dest)} {v}: {raw.strip()!r} is not {self.item.what}; give a "
                                    f"comma-separated list such as {self.example}") from None
            if not self.item.ok(x):
                raise LeantuneError(f"{flag(dest)} {v}: {x!r} is outside {self.item.interval()}; each value must be "
                                    f"{self.item.describe()}, e.g. {self.example}")


@dataclass(frozen=True)
class Device:
    """A torch device string that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""

    def check(self, dest: str, v) -> None:
        import torch

        try:
            dev = torch.device(v)
        except (RuntimeError, TypeError):
            raise LeantuneError(f"{flag(dest)} {v!r} is not a device; use cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0 or (dev.index or 0) >= n:
                raise LeantuneError(f"{flag(dest)} {v}: this machine has {n} CUDA device(s); use cpu"
                                    + (f" or cuda:0..cuda:{n - 1}" if n else ""))
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            raise LeantuneError(f"{flag(dest)} mps is not available on this machine; use cpu")


@dataclass(frozen=True)
class Dtype:
    """A weights' dtype name that --dtype takes (checked before loading anything or clearing a folder)."""

    def check(self, dest: str, v) -> None:
        from .precision import DTYPES

        if v not in DTYPES:
            raise LeantuneError(f"{flag(dest)}: unknown dtype '{v}'; choose one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class Size:
    """A memory size such as 200MB, 1.5GiB or 4096 (bytes)."""

    def check(self, dest: str, v) -> None:
        from .precision import parse_bytes

        try:
            parse_bytes(v)
        except LeantuneError:
            raise LeantuneError(f"{flag(dest)} {v!r} is not a size; write e.g. 200MB, 1.5GiB or 4096 (bytes)") \
                from None


@dataclass(frozen=True)
class CountOrAuto:
    """``auto`` or a count >= 0 (``--n-confirm``), as text from the command line or an int from a file."""

    def check(self, dest: str, v) -> None:
        ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or \
            (isinstance(v, str) and (v.strip().lower() == "auto" or v.strip().isdigit()))
        if not ok:
            raise LeantuneError(f"{flag(dest)} must be auto or a count >= 0, got {v!r}")


COUNT = Number(int, 0)           # 0 allowed (e.g. zero-shot)
AT_LEAST_1 = Number(int, 1)
POSITIVE = Number(float, 0, low_open=True)
NON_NEGATIVE = Number(float, 0)
FRACTION = Number(float, 0, 1, high_open=True)
SEED = Number(int, 0, 2**32 - 1)  # numpy's seed range (transformers.set_seed seeds numpy too)

# dest -> rule, for every command that has the option
RULES = {
    "shots": COUNT, "top_k": AT_LEAST_1, "n_val": AT_LEAST_1, "n_test": AT_LEAST_1, "n_eval": AT_LEAST_1,
    "batch_size": AT_LEAST_1, "eval_batch_size": AT_LEAST_1, "max_length": AT_LEAST_1, "seed": SEED,
    "rank": AT_LEAST_1, "alpha": POSITIVE, "dropout": FRACTION, "lr": POSITIVE, "v_lr_ratio": POSITIVE,
    "k_lr_ratio": POSITIVE, "head_lr": POSITIVE, "loraplus_ratio": POSITIVE, "weight_decay": NON_NEGATIVE,
    "warmup": NON_NEGATIVE, "max_steps": AT_LEAST_1, "epochs": POSITIVE, "eval_every": AT_LEAST_1,
    "log_every": AT_LEAST_1, "max_train_samples": AT_LEAST_1, "max_eval_samples": AT_LEAST_1,
    "steps": AT_LEAST_1, "monitor": COUNT, "eval_instances": AT_LEAST_1, "seeds": AT_LEAST_1,
    "instances": AT_LEAST_1, "grad_accum": AT_LEAST_1,
    "rates": NumberList(FRACTION, "0,0.5,0.9,0.99"), "device": Device(), "dtype": Dtype(),
    "reuse_memory": Size(), "svd_cache_memory": Size(),
    "confirm_alpha": Number(float, 0, 1, low_open=True, high_open=True), "n_confirm": CountOrAuto(),
}
# where one name means something else in one command
COMMAND_RULES = {
    "lab study": {"shots": NumberList(COUNT, "1,4")},
}
HINTS = {"n_eval": " (omit --n-eval to evaluate the whole split)",
         "max_steps": " (omit --max-steps to train for --epochs)"}


def command_of(args: argparse.Namespace) -> str:
    """``icl search``, ``finetune``, ``lab study``, ... from the parsed subcommand words."""
    words = [getattr(args, k, None) for k in ("command", "icl_command", "lab_command")]
    return " ".join(w for w in words if w)


def check_values(values: dict, command: str = "") -> None:
    """Every known option in ``values`` (None = not given) against its rule."""
    rules = {**RULES, **COMMAND_RULES.get(command, {})}
    for dest, v in values.items():
        rule = rules.get(dest)
        if rule is None or v is None:
            continue
        try:
            rule.check(dest, v)
        except LeantuneError as e:
            raise LeantuneError(f"{e}{HINTS.get(dest, '')}") from None


def check_choices(parser: argparse.ArgumentParser | None, args: argparse.Namespace) -> None:
    """argparse checks ``choices`` only on the command line; a --config file's values come in as defaults."""
    for action in getattr(parser, "_actions", ()):
        v = getattr(args, action.dest, None)
        if action.choices and v is not None and not isinstance(action, argparse._SubParsersAction) \
                and v not in action.choices:
            raise LeantuneError(f"{flag(action.dest)} must be one of {', '.join(map(str, action.choices))}, got {v!r}")


def check_args(args: argparse.Namespace) -> None:
    """All option checks of one parsed command, then its output locations (nothing is written before)."""
    command = command_of(args)
    check_choices(getattr(args, "parser", None), args)
    check_values({k: v for k, v in vars(args).items() if k not in ("parser", "recipe")}, command)
    check_outputs(command, args)
