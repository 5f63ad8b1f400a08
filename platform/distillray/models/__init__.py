"""Teacher and student construction. Plain PyTorch / transformers: nothing here knows about Ray
or DeepSpeed (those live in `distillray.distributed`)."""

from distillray.models.hf import (
    content_hash,
    export_model,
    is_finetuned_for,
    load_classifier,
    load_tokenizer,
    model_config,
    resolve_model_dir,
    save_model_dir,
    tokenizer_hash,
)
from distillray.models.pruned_bert import register as _register_pruned_bert
from distillray.models.student import (
    LayerDistillModel,
    build_student,
    default_layers,
    distill_layer_map,
    freeze_word_embeddings,
    layer_map,
    source_layers,
    student_shape,
)

_register_pruned_bert()  # Auto classes load head-pruned BERT dirs (model_type "pruned_bert")

__all__ = [
    "LayerDistillModel",
    "build_student",
    "distill_layer_map",
    "source_layers",
    "student_shape",
    "content_hash",
    "default_layers",
    "export_model",
    "freeze_word_embeddings",
    "is_finetuned_for",
    "layer_map",
    "load_classifier",
    "load_tokenizer",
    "model_config",
    "resolve_model_dir",
    "save_model_dir",
    "tokenizer_hash",
]
