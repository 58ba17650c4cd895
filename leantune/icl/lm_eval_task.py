"""Write an lm-evaluation-harness task equal to a leantune ICL set-up, to cross-check our scores.

The same template, label words, target delimiter (" "), demonstration separator ("\\n\\n") and the
same demonstrations in our order (lm-eval's ``first_n`` sampler over a file holding exactly them).
Used by the parity test and the speed benchmark; handy for users who want lm-eval's numbers too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..tasks import Task
from .evaluator import SEPARATOR


def write_lm_eval_task(task: Task, demos: list[dict], examples: list[dict], work: str | Path,
                       name: str = "leantune_task") -> Path:
    """Files for ``TaskManager(include_path=<returned dir>)``; run with ``num_fewshot=len(demos)``."""
    if task.kind != "classification":
        raise ValueError("the lm-eval bridge covers classification tasks (fixed label words)")
    work = Path(work)
    fields = re.findall(r"{(\w+)}", task.template)
    for stem, rows in (("demos", demos), ("examples", examples)):
        with open(work / f"{name}.{stem}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({**{k: r[k] for k in fields}, "label": r["label"], "idx": r["idx"]}) + "\n")
    jinja = task.template
    for k in fields:
        jinja = jinja.replace("{" + k + "}", "{{" + k + "}}")
    tasks_dir = work / f"{name}_tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    (tasks_dir / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {work / f'{name}.demos.jsonl'}
    test: {work / f'{name}.examples.jsonl'}
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: {json.dumps(jinja)}
doc_to_choice: {json.dumps(list(task.label_words))}
doc_to_target: label
target_delimiter: " "
fewshot_delimiter: {json.dumps(SEPARATOR)}
metric_list:
  - metric: acc
""")
    return tasks_dir
