"""Recipe behind ``leantune icl eval``: load, select examples, (edit), score, write results."""

from __future__ import annotations

from pathlib import Path

from ..models import gpt2_tokenizer_offline, load_model, load_tokenizer, model_source
from ..runinfo import versions, write_json, write_jsonl
from ..tasks import resolve_task
from .api import PreparedICLEval
from .splits import make_icl_data
from ..model_fit import check_vocab_fits


def tokenizer_for(model_name: str, tokenizer: str | None, trust_remote_code: bool = False):
    if tokenizer == "gpt2-offline":
        return gpt2_tokenizer_offline()
    return load_tokenizer(tokenizer or model_name, trust_remote_code=trust_remote_code)


def icl_eval(model: str, task: str, shots: int = 4, n_eval: int | None = None, seed: int = 0,
             calibrate: bool = False, edit: str | None = None, batch_size: int = 16, out: str | None = None,
             split: str = "validation", tokenizer: str | None = None, data_dir: str | None = None,
             dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False,
             progress: bool = True, device_map=None, max_memory=None) -> dict:
    config = dict(locals())
    config.pop("progress")
    if isinstance(device_map, dict):
        config["device_map"] = "custom"
    task_obj = resolve_task(task)
    data = make_icl_data(task_obj, shots, None, n_eval, seed, data_dir or "default", test_split=split)
    tok = tokenizer_for(model, tokenizer, trust_remote_code)
    prepared = PreparedICLEval(tok, task_obj, shots, n_eval, seed, calibrate, batch_size, split, data_dir, data=data)
    lm = load_model(model, head="causal-lm", dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                    device_map=device_map, max_memory=max_memory)
    check_vocab_fits(tok, lm, model, tokenizer)
    edit_info = None
    if edit:
        # a recipe step (this file is the `icl eval` recipe, not the icl engine): the svd engine edits the model
        from ..svd.api import apply_edit

        edit_info = apply_edit(lm, edit)
    m = prepared.run(lm, progress=progress)
    predictions = m.pop("predictions")
    examples = m.pop("examples")
    metrics = {**m, "edit": edit_info, "examples": examples, "config": config, "model_source": model_source(model),
               "versions": versions()}
    if out:
        write_json(Path(out) / "metrics.json", metrics)
        write_jsonl(Path(out) / "predictions.jsonl", predictions)
    return metrics
