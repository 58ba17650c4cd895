"""lm-evaluation-harness on leantune's ICL set-up: the same prompts, demonstrations and examples.

For users who want lm-eval's numbers beside ours (or who report with lm-eval): :func:`write_task` writes an
lm-eval task equal to a leantune ICL evaluation (template, label words, target delimiter " ",
demonstration separator, the same demonstrations in our order, the same sampled examples) and
:func:`evaluate` runs it with lm-eval's ``HFLM`` on a model you loaded. ``tests/test_icl_lm_eval_parity.py``
holds the parity: accuracies within half a point, log-likelihoods within 1e-3 per example.

Needs the ``lm-eval`` package (``pip install 'leantune[dev]'`` or ``pip install lm-eval``); the tasks are
files on disk, so nothing is downloaded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LeantuneError


@dataclass(frozen=True)
class LmEvalTask:
    """Where an lm-eval task lies and how to run it: ``TaskManager(include_path=include_path)``, task ``name``,
    ``num_fewshot`` (every demonstration, as leantune puts them in the prompt)."""

    include_path: str
    name: str
    num_fewshot: int


def write_task(task, shots: int = 4, n_eval: int | None = None, seed: int = 0, split: str = "validation",
               data_dir=None, out: str | Path | None = None, name: str = "leantune_task") -> LmEvalTask:
    """The lm-eval task for ``evaluate_icl(model, tokenizer, task, shots, n_eval, seed, split=split)``.

    ``task``: a name (sst2, rte, lab:N, ...), a task file or a :class:`~leantune.tasks.Task`; classification
    tasks (fixed label words) only. ``out``: the folder for its files (default: a new temporary folder).
    """
    from .icl.lm_eval_task import write_lm_eval_task
    from .icl.splits import make_icl_data
    from .tasks import Task, resolve_task

    task_obj = task if isinstance(task, Task) else resolve_task(task)
    if task_obj.kind != "classification":
        raise LeantuneError(f"the lm-eval bridge covers classification tasks (fixed label words); {task_obj.name} "
                            f"is {task_obj.kind}")
    data = make_icl_data(task_obj, shots, None, n_eval, seed, data_dir or "default", test_split=split)
    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="leantune-lm-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    tasks_dir = write_lm_eval_task(task_obj, data.demos, data.test, work, name=name)
    return LmEvalTask(str(tasks_dir), name, len(data.demos))


def evaluate(model, tokenizer, task, shots: int = 4, n_eval: int | None = None, seed: int = 0,
             batch_size: int = 16, split: str = "validation", data_dir=None, out: str | Path | None = None,
             log_samples: bool = False) -> dict:
    """lm-eval's accuracy of a loaded causal LM on leantune's set-up (see :func:`write_task`).

    Returns ``accuracy`` (lm-eval's ``acc``), ``stderr`` (its ``acc_stderr``), ``n``, ``task`` (the
    :class:`LmEvalTask`) and lm-eval's own ``results`` (and ``samples`` with ``log_samples``).
    """
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LeantuneError("the lm-eval bridge needs the package lm-eval: pip install lm-eval") from None
    from .model_fit import check_model

    check_model(model, "causal-lm", "leantune.lm_eval.evaluate")
    spec = write_task(task, shots, n_eval, seed, split, data_dir, out)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    res = simple_evaluate(model=lm, tasks=[spec.name], num_fewshot=spec.num_fewshot,
                          task_manager=TaskManager(include_path=spec.include_path), log_samples=log_samples)
    results = res["results"][spec.name]
    n = res.get("n-samples", {}).get(spec.name, {}).get("effective")
    out_dict = {"accuracy": results["acc,none"], "stderr": results.get("acc_stderr,none"), "n": n, "task": spec,
                "results": results}
    if log_samples:
        out_dict["samples"] = res["samples"][spec.name]
    return out_dict
