"""ICL accuracy of a lab model on held-out assignments, by number of shots."""

from __future__ import annotations

import statistics

SHOTS = (0, 1, 2, 4, 8)


def shots_table(model_dir: str, instances: int = 48, shots=SHOTS, progress: bool = False) -> list[dict]:
    """Mean test accuracy over ``instances`` held-out task instances (each: its own demonstrations)."""
    from tqdm.auto import tqdm

    from ..icl.evaluator import ICLEvaluator
    from ..icl.splits import make_icl_data
    from ..models import load_model, load_tokenizer
    from ..tasks import get_task

    model = load_model(model_dir, head="causal-lm")
    tok = load_tokenizer(model_dir)
    rows = []
    for k in shots:
        accs = []
        for i in tqdm(range(instances), desc=f"{k}-shot", disable=not progress, leave=False):
            task = get_task(f"lab:{i}")
            data = make_icl_data(task, k, None, None, seed=i)
            accs.append(ICLEvaluator(tok, task, data.demos, data.test, batch_size=32).evaluate(model)
                        .metrics["accuracy"])
        rows.append({"shots_per_class": k, "accuracy": statistics.mean(accs),
                     "std_over_instances": statistics.pstdev(accs), "instances": instances,
                     "examples": instances * len(data.test)})
    return rows
