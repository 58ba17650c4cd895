"""ICL accuracy of a lab model on held-out assignments, by number of shots."""

from __future__ import annotations

import statistics

SHOTS = (0, 1, 2, 4, 8)


def instance_metrics(model, tok, shots: int, instances: int, bar=None) -> list[dict]:
    """Test metrics on held-out instances ``lab:0..instances-1``, demonstrations drawn with seed = instance."""
    from ..icl.evaluator import ICLEvaluator
    from ..icl.splits import make_icl_data
    from ..tasks import get_task

    out = []
    for i in range(instances):
        task = get_task(f"lab:{i}")
        data = make_icl_data(task, shots, None, None, seed=i)
        out.append(ICLEvaluator(tok, task, data.demos, data.test, batch_size=32).evaluate(model).metrics)
        if bar is not None:
            bar.update(1)
    return out


def shots_table(model_dir: str, instances: int = 48, shots=SHOTS, progress: bool = False) -> list[dict]:
    """Mean test accuracy over ``instances`` held-out task instances (each: its own demonstrations)."""
    from tqdm.auto import tqdm

    from ..models import load_model, load_tokenizer

    model = load_model(model_dir, head="causal-lm")
    tok = load_tokenizer(model_dir)
    rows = []
    for k in shots:
        with tqdm(total=instances, desc=f"{k}-shot", disable=not progress, leave=False) as bar:
            metrics = instance_metrics(model, tok, k, instances, bar)
        accs = [m["accuracy"] for m in metrics]
        rows.append({"shots_per_class": k, "accuracy": statistics.mean(accs),
                     "std_over_instances": statistics.pstdev(accs), "instances": instances,
                     "examples": sum(m["n"] for m in metrics)})
    return rows
