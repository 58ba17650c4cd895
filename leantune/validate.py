"""Option checks where input enters: after the command line and ``--config`` are merged, before any work.

One table says what each numeric or list option may hold; every command's options go through it, so a
bad value is one line naming the flag (``leantune: error: --top-k must be an integer >= 1, got 0``)
instead of a traceback from deep inside torch or transformers, or a silently empty run.
"""

from __future__ import annotations

import argparse
import math
import os
import types
import typing
from dataclasses import dataclass, fields

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

    def check(self, name: str, v) -> None:  # name: "--lr", or "lr=" of a library call
        if not self.ok(v):
            raise LeantuneError(f"{name} must be {self.describe()}, got {v!r}")


@dataclass(frozen=True)
class NumberList:
    """A comma-separated list (or a config-file list) whose items each satisfy ``item``."""

    item: Number
    example: str

    def check(self, name: str, v) -> None:  # name: "--lr", or "lr=" of a library call
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not items:
            raise LeantuneError(f"{name} must be a comma-separated list such as {self.example}, got {v!r}")
        for raw in items:
            try:
                x = self.item.kind(raw.strip()) if isinstance(raw, str) else raw
            except ValueError:
                raise LeantuneError(f"{name} {v}: {raw.strip()!r} is not {self.item.what}; give a "
                                    f"comma-separated list such as {self.example}") from None
            if not self.item.ok(x):
                raise LeantuneError(f"{name} {v}: {x!r} is outside {self.item.interval()}; each value must be "
                                    f"{self.item.describe()}, e.g. {self.example}")


@dataclass(frozen=True)
class Text:
    """A non-empty text (an empty ``--layers ""``, e.g. an unset shell variable, never means "all")."""

    example: str

    def check(self, name: str, v) -> None:  # name: "--lr", or "lr=" of a library call
        if isinstance(v, str) and not v.strip():
            raise LeantuneError(f"{name} is empty; give e.g. {self.example}")


@dataclass(frozen=True)
class Device:
    """A torch device string that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""

    def check(self, name: str, v) -> None:  # name: "--lr", or "lr=" of a library call
        import torch

        try:
            dev = torch.device(v)
        except (RuntimeError, TypeError):
            raise LeantuneError(f"{name} {v!r} is not a device; use cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0 or (dev.index or 0) >= n:
                raise LeantuneError(f"{name} {v}: this machine has {n} CUDA device(s); use cpu"
                                    + (f" or cuda:0..cuda:{n - 1}" if n else ""))
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            raise LeantuneError(f"{name} mps is not available on this machine; use cpu")


@dataclass(frozen=True)
class Dtype:
    """A weights' dtype name that --dtype takes (checked before loading anything or clearing a folder)."""

    def check(self, name: str, v) -> None:  # name: "--lr", or "lr=" of a library call
        from .precision import DTYPES

        if v not in DTYPES:
            raise LeantuneError(f"{name}: unknown dtype '{v}'; choose one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class Size:
    """A memory size such as 200MB, 1.5GiB or 4096 (bytes)."""

    def check(self, name: str, v) -> None:  # name: "--lr", or "lr=" of a library call
        from .precision import parse_bytes

        try:
            parse_bytes(v)
        except LeantuneError:
            raise LeantuneError(f"{name} {v!r} is not a size; write e.g. 200MB, 1.5GiB or 4096 (bytes)") \
                from None


@dataclass(frozen=True)
class CountOrAuto:
    """``auto`` or a count >= 0 (``--n-confirm``), as text from the command line or an int from a file."""

    def check(self, name: str, v) -> None:  # name: "--n-confirm", or "n_confirm=" of a library call
        ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or \
            (isinstance(v, str) and (v.strip().lower() == "auto" or v.strip().isdigit()))
        if not ok:
            raise LeantuneError(f"{name} must be auto or a count >= 0, got {v!r}")


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
    "layers": Text("all, last4, 8-11 or 0,3,-1"), "modules": Text("mlp,attn"),
}
# where one name means something else in one command
COMMAND_RULES = {
    "lab study": {"shots": NumberList(COUNT, "1,4")},
}
HINTS = {"n_eval": " (omit --n-eval to evaluate the whole split)",
         "max_steps": " (omit --max-steps to train for --epochs)"}


# --- types: every value against its config dataclass field ----------------------------------------------------
_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def _describe(t) -> str:
    origin, args = typing.get_origin(t), [a for a in typing.get_args(t) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple) or t in (list, tuple):
        return f"a list{' of ' + _describe(args[0]).removeprefix('a ').removeprefix('an ') + 's' if args else ''}"
    return _WHAT.get(t, getattr(t, "__name__", str(t)))


def _fits(t, v) -> bool:
    """Does ``v`` (from the command line, a --config file or a library call) have the field type ``t``?"""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, v) for a in args)
    if t is type(None):
        return v is None
    if origin in (list, tuple) or t in (list, tuple):
        item = args[0] if args else None
        if isinstance(v, str):  # a comma-separated list, as on the command line
            return item in (None, str, int, float)
        return isinstance(v, (list, tuple)) and (item is None or all(_fits(item, x) for x in v))
    if t is bool:
        return isinstance(v, bool)  # "no" or "false" is a non-empty string, i.e. true to Python: refused
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t in (str, dict):
        return isinstance(v, t)
    return isinstance(v, t) if isinstance(t, type) else True  # anything else: the engine checks it


def check_types(cls: type, values: dict) -> None:
    """Every value against its field's annotation (bool, int, float, str, list of X, X | None): after the command
    line and ``--config`` are merged, and for a library call's keywords. All mistakes in one line, each naming
    its key, so a string where a boolean belongs never silently means true."""
    hints = typing.get_type_hints(cls)
    mistakes = []
    for f in fields(cls):
        if f.name in values and not _fits(hints[f.name], values[f.name]):
            v = values[f.name]
            shown = "null" if v is None else repr(v)
            mistakes.append(f"{flag(f.name)} must be {_describe(hints[f.name])}, got {shown}")
    if mistakes:
        raise LeantuneError("; ".join(mistakes))


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
            rule.check(flag(dest), v)
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
    recipe = getattr(args, "recipe", None)
    if recipe is not None:  # types first: the range checks below assume a number is a number
        check_types(recipe.config, {f.name: getattr(args, f.name) for f in fields(recipe.config)
                                    if hasattr(args, f.name)})
    check_choices(getattr(args, "parser", None), args)
    check_values({k: v for k, v in vars(args).items() if k not in ("parser", "recipe")}, command)
    check_outputs(command, args)


# --- the library's entry points: the same rules, naming the function's argument --------------------------------
# a library argument -> the option whose rule it shares (create_optimizer(v_ratio=...) is --v-lr-ratio)
ARGUMENT_RULES = {"v_ratio": "v_lr_ratio", "k_ratio": "k_lr_ratio"}


def check_call(func: str, **values) -> None:
    """Arguments of the library function ``func`` against the command line's rules (None = not given): one
    LeantuneError naming the argument (``create_optimizer() argument lr must be a finite number > 0, got '1e-3'``)."""
    for arg, v in values.items():
        rule = RULES.get(ARGUMENT_RULES.get(arg, arg))
        if rule is not None and v is not None:
            rule.check(f"{func}() argument {arg}", v)


def check_model_arg(func: str, model, arg: str = "model") -> None:
    """A loaded transformers model (an nn.Module with a config), not a name or a tokenizer."""
    from torch import nn

    if isinstance(model, (str, os.PathLike)):
        raise LeantuneError(f"{func}() argument {arg} must be a loaded model, got the name {str(model)!r}; load it "
                            f"with leantune.models.load_model({str(model)!r}, head='causal-lm') (or use the command's "
                            "function, e.g. leantune.icl_eval, which takes names)")
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        hint = " (model and tokenizer swapped?)" if hasattr(model, "encode") else ""
        raise LeantuneError(f"{func}() argument {arg} must be a transformers model (an nn.Module with a .config), "
                            f"got {type(model).__name__}{hint}")


def check_tokenizer_arg(func: str, tokenizer, arg: str = "tokenizer") -> None:
    from torch import nn

    if not (callable(tokenizer) and hasattr(tokenizer, "encode")) or isinstance(tokenizer, nn.Module):
        hint = " (model and tokenizer swapped?)" if hasattr(tokenizer, "config") else ""
        raise LeantuneError(f"{func}() argument {arg} must be a tokenizer (e.g. AutoTokenizer.from_pretrained(...)), "
                            f"got {type(tokenizer).__name__}{hint}")


def check_placement(name: str, placement: dict, allow_disk: bool = True) -> None:
    """The devices inside a --device-map (values) or --max-memory (keys) spec, checked as --device is: a GPU
    index this machine has, cpu, disk (a map's offload), or a device string such as cuda:1 or mps."""
    for where, dev in placement.items():
        label = f"{name} ({where} -> {dev!r})" if name == "--device-map" else f"{name} ({dev}=...)"
        if isinstance(dev, bool):
            raise LeantuneError(f"{label}: a device is a GPU index, cpu{', disk' if allow_disk else ''} or cuda:N")
        if isinstance(dev, int):
            dev = f"cuda:{dev}"
        if dev == "cpu" or (allow_disk and dev == "disk"):
            continue
        if not isinstance(dev, str):
            raise LeantuneError(f"{label}: a device is a GPU index, cpu{', disk' if allow_disk else ''} or cuda:N")
        Device().check(label, dev)
