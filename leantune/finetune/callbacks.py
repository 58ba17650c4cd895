"""A ``Trainer`` callback that logs the learning rate of every optimizer group (q, v, head, ...).

The Trainer logs one ``learning_rate`` (the first group's), so with ``lr_V = lambda * lr_Q`` the V rate
never reaches TensorBoard, W&B or MLflow. :class:`QVLearningRateCallback` adds ``learning_rate/<group>``
for every group of the optimizer (the names :func:`leantune.create_optimizer` gives: ``q.lora_A``,
``v.lora_A``, ``head``; unnamed groups by index) to each log, and to ``trainer.state.log_history``.

Order matters: the Trainer calls the reporting callbacks (``report_to``) before the ones given as
``Trainer(callbacks=[...])``, and each reporter writes a log when it is called. So install it first with
``QVLearningRateCallback.install(trainer)``; given in ``callbacks=`` with reporters on, it warns that they
missed the group rates.
"""

from __future__ import annotations

import warnings

from transformers import TrainerCallback


class QVLearningRateCallback(TrainerCallback):
    """Adds ``learning_rate/<group name>`` for every optimizer group to each Trainer log."""

    def __init__(self):
        self.first = False  # set by install(): called before the reporting callbacks
        self._warned = False
        self._rates: dict[str, float] | None = None

    @classmethod
    def install(cls, trainer) -> "QVLearningRateCallback":
        """Put a new callback first in ``trainer``'s list, so every logger sees the group rates."""
        callback = cls()
        callback.first = True
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    @staticmethod
    def group_rates(optimizer) -> dict[str, float]:
        return {f"learning_rate/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}

    def on_train_begin(self, args, state, control, **kwargs):
        reporters = [r for r in (args.report_to or []) if r != "none"]
        if reporters and not self.first and not self._warned:
            self._warned = True
            warnings.warn("QVLearningRateCallback given in Trainer(callbacks=...) runs after the reporting callbacks "
                          f"({', '.join(reporters)}), which then never see the group learning rates; install it with "
                          "QVLearningRateCallback.install(trainer) instead", stacklevel=2)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # the rates this step used: the Trainer's own learning_rate is read here too, before the scheduler steps
        if optimizer is not None:
            self._rates = self.group_rates(optimizer)

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        rates = self._rates
        if logs is None or rates is None or "learning_rate" not in logs:  # training logs only, not eval ones
            return
        logs.update(rates)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(rates)  # the Trainer copied the logs into the history before callbacks
