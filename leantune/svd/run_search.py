"""Recipe behind ``leantune icl search``: load, choose examples, search, test the winner, write it all.

Outputs in ``out``: ``run.json`` (the arguments; a different run in the same folder is refused),
``candidates.jsonl`` (journal), ``summary.json``, ``edit.json``, ``heatmap.png``,
``test_predictions.jsonl``.
"""

from __future__ import annotations

from .api import PAPER_RATES, SEMANTIC, _check_run_dir, _dist, _dry_run, check_search_args, search_svd  # noqa: F401
from .runlock import one_search_per_folder


@one_search_per_folder  # adds wait_lock=False: wait for another search on the same out instead of refusing
def icl_search(model: str, task: str, strategy: str = "paper", modules: str = "mlp,attn", layers: str = "all",
               rates: str | list = PAPER_RATES, shots: int = 4, n_val: int = 200, n_test: int | None = 500,
               seed: int = 0, top_k: int = 3, svd_dtype: str = "float32", evaluator: str = "icl",
               calibrate: bool = False, batch_size: int = 16, max_length: int = 128, tokenizer: str | None = None,
               split: str = "validation", data_dir: str | None = None, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, out: str = "runs/search", dry_run: bool = False,
               progress: bool = True, device_map=None, max_memory=None, reuse_memory: str | int | None = None,
               reuse_overflow: str = "auto") -> dict:
    """Load ``model`` (a name) and its tokenizer, then :func:`~leantune.svd.api.search_svd` into ``out``."""
    from ..icl.run_eval import tokenizer_for
    from ..model_fit import check_vocab_fits, fit_max_length
    from ..models import load_model, model_source

    rates = [float(r) for r in (rates.split(",") if isinstance(rates, str) else rates)]
    modules = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules)]
    check_search_args(strategy, svd_dtype, evaluator, reuse_overflow)
    cfg = dict(model=model, task=task, strategy=strategy, modules=modules, layers=layers, rates=rates, shots=shots,
               n_val=n_val, n_test=n_test, seed=seed, top_k=top_k, svd_dtype=svd_dtype, evaluator=evaluator,
               calibrate=calibrate, batch_size=batch_size, max_length=max_length, tokenizer=tokenizer, split=split,
               data_dir=data_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code, out=out,
               device_map=device_map if not isinstance(device_map, dict) else "custom", max_memory=max_memory,
               reuse_memory=reuse_memory, reuse_overflow=reuse_overflow)
    head = "seq-cls" if evaluator == "classifier" else "causal-lm"
    lm = load_model(model, head=head, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                    device_map=device_map, max_memory=max_memory)
    tok = tokenizer_for(model, tokenizer, trust_remote_code)
    check_vocab_fits(tok, lm, model, tokenizer)
    if evaluator == "classifier":
        max_length = fit_max_length(max_length, lm)  # run.json keeps the value given (cfg), so reruns match
        if lm.config.pad_token_id is None:  # a causal LM loaded as a classifier: batches need a pad id
            lm.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    summary = search_svd(lm, tok, task, strategy=strategy, modules=modules, layers=layers, rates=rates, shots=shots,
                         n_val=n_val, n_test=n_test, seed=seed, top_k=top_k, svd_dtype=svd_dtype, evaluator=evaluator,
                         calibrate=calibrate, batch_size=batch_size, max_length=max_length, split=split,
                         data_dir=data_dir, out=None if dry_run else out, dry_run=dry_run, progress=progress,
                         record=cfg, source=None if dry_run else model_source(model), reuse_memory=reuse_memory,
                         reuse_overflow=reuse_overflow)
    summary.pop("edit", None)  # the CLI's summary is summary.json's content; the edit is in edit.json
    return summary
