"""The ICL engine as a library: accuracy of a loaded causal LM with fixed demonstrations.

``leantune icl eval`` (``recipes/icl_eval.py``) loads the model and tokenizer from names and calls this.
"""

from __future__ import annotations

from ..model_fit import check_model
from ..tasks import Task, resolve_task
from .evaluator import ICLEvaluator
from .splits import ICLData, make_icl_data


class PreparedICLEval:
    """A task's demonstrations and examples, tokenized once; :meth:`run` scores any model on them."""

    def __init__(self, tokenizer, task: Task | str, shots: int = 4, n_eval: int | None = None, seed: int = 0,
                 calibrate: bool = False, batch_size: int = 16, split: str = "validation", data_dir=None,
                 data: ICLData | None = None):
        self.task = task if isinstance(task, Task) else resolve_task(task)
        self.shots = shots
        self.data = data or make_icl_data(self.task, shots, None, n_eval, seed, data_dir or "default",
                                          test_split=split)
        self.evaluator = ICLEvaluator(tokenizer, self.task, self.data.demos, self.data.test, calibrate=calibrate,
                                      batch_size=batch_size)

    def run(self, model, progress: bool = False) -> dict:
        check_model(model, "causal-lm", "evaluate_icl")
        result = self.evaluator.evaluate(model, progress=progress)
        return {**result.metrics, "task": self.task.name, "shots_per_class": self.shots,
                "examples": self.data.manifest(), "predictions": result.predictions}


def evaluate_icl(model, tokenizer, task: Task | str, shots: int = 4, n_eval: int | None = None, seed: int = 0,
                 calibrate: bool = False, batch_size: int = 16, split: str = "validation", data_dir=None,
                 progress: bool = False) -> dict:
    """ICL accuracy of ``model`` (a loaded causal LM) on ``task`` with ``shots`` demonstrations per class.

    ``task``: a registered name (sst2, rte, cb, copa, ..., lab:N), a task file path, or a
    :class:`~leantune.tasks.Task`. Demonstrations come from the train split and ``n_eval`` examples (all
    when None) from ``split``, both drawn with ``seed``. Every (example, choice) is scored by continuation
    log-likelihood with the demonstrations' KV cache shared by all batches. ``calibrate``: contextual
    calibration (Zhao et al. 2021). Returns ``accuracy``, ``n``, ``correct``, ``per_class``,
    ``tokens_processed``, ``seconds`` (``acc_norm`` for multiple choice), ``task``, ``shots_per_class``,
    ``examples`` (which records were used) and ``predictions`` (one record per example).
    """
    from ..validate import check_call, check_model_arg, check_tokenizer_arg

    check_model_arg("evaluate_icl", model)  # before any data is read or tokenized
    check_tokenizer_arg("evaluate_icl", tokenizer)
    check_call("evaluate_icl", shots=shots, n_eval=n_eval, seed=seed, batch_size=batch_size)
    return PreparedICLEval(tokenizer, task, shots, n_eval, seed, calibrate, batch_size, split,
                           data_dir).run(model, progress)
