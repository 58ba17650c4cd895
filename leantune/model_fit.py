"""Does this input fit this model? Checked right after loading, before the first forward pass.

Without these checks the mismatch surfaces as an index error deep inside the model's embedding.
"""

from __future__ import annotations

from .errors import LeantuneError


def check_vocab_fits(tokenizer, model, model_name: str, tokenizer_name: str | None) -> None:
    """Refuse a tokenizer whose ids reach beyond the model's embedding."""
    rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise LeantuneError(f"the tokenizer ({tokenizer_name or model_name}) has {len(tokenizer)} tokens but "
                            f"{model_name} embeds only {rows}; pass the --tokenizer the model was trained with")


def position_limit(model) -> int | None:
    cfg = model.config
    limit = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    if limit and cfg.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= (cfg.pad_token_id or 0) + 1  # positions start after the padding index
    return limit


def fit_max_length(max_length: int, model) -> int:
    """The truncation length to use: at most the model's positions (texts past them would index beyond the
    position embedding; the model cannot read them anyway, so truncating there loses nothing it could use)."""
    limit = position_limit(model)
    return min(max_length, limit) if limit else max_length


def check_causal_lm(model, model_name: str) -> None:
    """ICL scores continuations with a causal LM. An encoder (BERT, RoBERTa, MiniLM) also loads as a "causal LM"
    (transformers maps it to its LM head without causal masking), then fails inside attention: refuse it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    cfg = model.config
    if cfg.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(cfg, "is_decoder", False) \
            and not getattr(cfg, "is_encoder_decoder", False):
        raise LeantuneError(f"{model_name} is an encoder ({cfg.model_type}), not a causal LM: in-context learning "
                            "scores continuations with a causal LM (e.g. gpt2, smollm2-135m); for a fine-tuned "
                            "classifier use `leantune icl search --evaluator classifier`")


def _inner(model):
    """The transformers model inside a PEFT model or a leantune AdaptedModel (both offer get_base_model)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def check_model(model, needs: str, caller: str) -> None:
    """What a library entry point is handed must be a loaded model with the head it needs.

    ``needs``: ``causal-lm`` (scoring continuations: ``evaluate_icl``, ``search_svd``), ``seq-cls`` (the
    classifier evaluator) or ``any`` (a transformers model of any head). One clear error says what to pass,
    instead of an ``AttributeError`` about ``logits`` deep inside the scoring.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        what = f"{type(model).__name__} {model!r}" if isinstance(model, (str, bytes)) else type(model).__name__
        raise LeantuneError(f"{caller} takes a loaded model, got {what}; load one with "
                            "leantune.load_model(name, head='causal-lm') (or 'seq-cls' for a classifier)")
    inner = _inner(model)
    cls = type(inner).__name__
    if getattr(getattr(inner, "config", None), "model_type", None) is None:
        raise LeantuneError(f"{caller} needs a transformers model (with a config), got {cls}")
    if needs == "causal-lm":
        classifier = cls.endswith("ForSequenceClassification")
        masked = cls.endswith("ForMaskedLM")
        get_out = getattr(inner, "get_output_embeddings", None)
        lm_head = callable(get_out) and get_out() is not None
        if classifier or masked or not lm_head:
            kind = "a sequence classifier" if classifier else "a masked LM" if masked else "a base model without an LM head"
            extra = " (or search_svd(..., evaluator='classifier') to search a classifier's accuracy)" if classifier else ""
            raise LeantuneError(f"{caller} scores continuations with a causal LM, but it was handed {kind} ({cls}); "
                                f"load the model with leantune.load_model(name, head='causal-lm'){extra}")
        check_causal_lm(inner, f"the model handed to {caller}")  # an encoder with an LM head (BertLMHeadModel) has no causal masking
    elif needs == "seq-cls" and not cls.endswith("ForSequenceClassification"):
        raise LeantuneError(f"{caller} with the classifier evaluator needs a sequence classifier, but it was handed "
                            f"{cls}; load the model with leantune.load_model(name, head='seq-cls')")
