"""Students of a BERT-family teacher, three ways (`student.init`):

  copy      DistilBERT: the teacher's width and embeddings, a subset of its layers.
  truncate  the same layers, each matrix sliced to a smaller width (its first rows and columns),
            heads scaled so the head size stays the teacher's: the first heads are kept whole.
  scratch   a fresh model of the chosen depth and width (random, seeded), the teacher's vocabulary.

The student is a fresh model of the teacher's architecture with `len(layers)` encoder layers,
whose weights are copied from the teacher: embeddings, the chosen encoder layers (student layer
j <- teacher layer layers[j]), and everything else (pooler, classifier head). This works for the
BERT family (BERT, RoBERTa, DistilBERT, ELECTRA, MiniLM...) whose encoder layers are named
`....layer.<i>.`.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from distillray.errors import ConfigError, ModelError

_LAYER_KEY = re.compile(r"^(?P<pre>.*\.layer\.)(?P<idx>\d+)(?P<post>\..*)$")


def default_layers(num_teacher_layers: int) -> list[int]:
    """Every other layer, starting at 0: [0, 2, 4] of 6, as DistilBERT took from BERT."""
    return list(range(0, num_teacher_layers, 2))


def check_layers(layers: list[int], num_teacher_layers: int) -> None:
    if len(layers) > num_teacher_layers:
        raise ConfigError(
            f"config error: student.layers={layers} has {len(layers)} layers but the teacher has "
            f"only {num_teacher_layers}; fix: pick at most {num_teacher_layers}, e.g. "
            f"student.layers={default_layers(num_teacher_layers)}"
        )
    bad = [i for i in layers if not 0 <= i < num_teacher_layers]
    if bad:
        raise ConfigError(
            f"config error: student.layers={layers}: index {bad[0]} is outside the teacher's "
            f"layers 0..{num_teacher_layers - 1}; fix: e.g. "
            f"student.layers={default_layers(num_teacher_layers)}"
        )


def uniform_layers(num_layers: int, num_teacher_layers: int) -> list[int]:
    """`num_layers` evenly spaced teacher layers ending at its last: TinyBERT's uniform map
    (student layer j <- teacher layer (j+1) * M / N - 1); [1, 3, 5] of 6 for 3."""
    n, k = num_teacher_layers, num_layers
    return [int((j + 1) * n / k + 0.5) - 1 for j in range(k)]


def source_layers(student, num_teacher_layers: int) -> list[int]:
    """The teacher layers a student (a `StudentConfig`) is built from, and so, by default, the
    ones its layers learn from: student.layers, else num_layers evenly spaced, else every other."""
    if student.layers is not None:
        return list(student.layers)
    if student.num_layers is not None:
        return uniform_layers(student.num_layers, num_teacher_layers)
    return default_layers(num_teacher_layers)


def distill_layer_map(student, layer_map: list[int] | None, num_teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs the intermediate-layer losses compare: `layer_map`
    (distill.layer_map; -1 skips a student layer), else the layers the student was built from."""
    teacher = layer_map if layer_map is not None else source_layers(student, num_teacher_layers)
    return [(s, t) for s, t in enumerate(teacher) if t >= 0]


def student_shape(teacher_cfg, student) -> dict[str, int]:
    """The student's num_hidden_layers, hidden_size, num_attention_heads and intermediate_size for
    a teacher config and a `StudentConfig`; a shape it cannot have is a ConfigError."""
    th, heads, n = teacher_cfg.hidden_size, teacher_cfg.num_attention_heads, teacher_cfg.num_hidden_layers
    h = student.hidden_size or th
    layers = student.num_layers or (len(student.layers) if student.layers is not None else len(default_layers(n)))
    if student.init == "copy" and h != th:
        raise ConfigError(f"config error: student.hidden_size={h} differs from the teacher's {th}, which "
                          "student.init=copy cannot do; fix: set student.init=truncate or student.init=scratch")
    if student.init != "scratch" and layers > n:
        raise ConfigError(f"config error: the student has {layers} layers, the teacher only {n} to "
                          f"{student.init} them from; fix: set student.num_layers<={n}, or student.init=scratch")
    if h > th and student.init == "truncate":
        raise ConfigError(f"config error: student.hidden_size={h} is wider than the teacher's {th}; "
                          "truncation only narrows; fix: pick a smaller width, or student.init=scratch")
    if (h * heads) % th:
        raise ConfigError(f"config error: student.hidden_size={h} must be a multiple of the teacher's head size "
                          f"{th // heads} (heads scale with the width); fix: e.g. "
                          f"student.hidden_size={max(1, h * heads // th) * (th // heads)}")
    return {"num_hidden_layers": layers, "hidden_size": h, "num_attention_heads": h * heads // th,
            "intermediate_size": teacher_cfg.intermediate_size * h // th}


def layer_map(layers: list[int]) -> dict[int, int]:
    """teacher layer index -> student layer index."""
    return {t: s for s, t in enumerate(layers)}


def build_student(teacher: PreTrainedModel, layers: list[int] | None = None,
                  auto_class: type = AutoModelForSequenceClassification, student=None,
                  seed: int = 0) -> PreTrainedModel:
    """A student of `teacher`: by default its embeddings, chosen layers and head (`layers`);
    with `student` (a `StudentConfig`), the depth, width and init it names. `auto_class` names
    the head (e.g. AutoModelForQuestionAnswering for a QA teacher)."""
    n = teacher.config.num_hidden_layers
    cfg = copy.deepcopy(teacher.config)
    cfg.architectures = [type(teacher).__name__]
    if student is not None:
        cfg.update(student_shape(teacher.config, student))
        layers = source_layers(student, n)
        if student.init == "scratch":
            torch.manual_seed(seed)
            return auto_class.from_config(cfg)
    layers = default_layers(n) if layers is None else list(layers)
    check_layers(layers, n)
    cfg.num_hidden_layers = len(layers)
    student = auto_class.from_config(cfg)
    mapping = layer_map(layers)
    src = teacher.state_dict()
    dst = student.state_dict()
    new_state = {}
    for key, value in src.items():
        m = _LAYER_KEY.match(key)
        if m:
            t_idx = int(m["idx"])
            if t_idx not in mapping:
                continue
            key = f"{m['pre']}{mapping[t_idx]}{m['post']}"
        if key in dst:
            # truncate: the first rows/columns of each matrix (a no-op at the teacher's width)
            new_state[key] = value[tuple(slice(0, k) for k in dst[key].shape)].detach().clone()
    missing = [k for k in dst if k not in new_state]
    if missing:
        raise ModelError(
            f"cannot build a student from {type(teacher).__name__}: {len(missing)} student weights "
            f"have no teacher source (e.g. {missing[0]}); only BERT-family models whose layers are "
            "named '...layer.<i>.' are supported"
        )
    with torch.no_grad():
        student.load_state_dict(new_state, strict=True)
    return student


def freeze_word_embeddings(model: PreTrainedModel) -> None:
    """Stop training the word-embedding matrix (vocab x hidden, the teacher's copy in a student):
    no gradient, so no optimizer state and no clipping or ZeRO bookkeeping for it. Position and
    token-type embeddings still train."""
    model.get_input_embeddings().weight.requires_grad_(False)


class LayerDistillModel(torch.nn.Module):
    """A student that also returns its mapped intermediate layers, for TinyBERT's hidden-state and
    attention losses: hidden states projected to the teacher's width by one learned linear map
    (TinyBERT's W_h, trained with the student and dropped on export), attention distributions as
    they are. `pairs`: (student layer, index into the stored teacher layers)."""

    def __init__(self, model: PreTrainedModel, student_layers: list[int], teacher_hidden: int,
                 hidden: bool, attention: bool) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.student_layers = list(student_layers)
        self.hidden, self.attention = hidden, attention
        width = model.config.hidden_size
        self.proj = torch.nn.Linear(width, teacher_hidden) if hidden and width != teacher_hidden else None
        if attention:
            model.set_attn_implementation("eager")  # sdpa returns no attention probabilities

    def forward(self, layer_outputs: bool = False, **inputs: torch.Tensor):
        """The model's output; with `layer_outputs`, (output, states, attentions): states
        (batch, layers, seq, teacher_hidden) or None, attentions (batch, layers, heads, seq, seq) or None."""
        if not layer_outputs:
            return self.model(**inputs)
        inputs["output_hidden_states"] = self.hidden or bool(inputs.get("output_hidden_states"))
        out = self.model(**inputs, output_attentions=self.attention)
        states = attn = None
        if self.hidden:
            states = torch.stack([out.hidden_states[j + 1] for j in self.student_layers], 1)
            if self.proj is not None:
                states = self.proj(states)
        if self.attention:
            attn = torch.stack([out.attentions[j] for j in self.student_layers], 1)
        return out, states, attn

    @staticmethod
    def student_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The plain student's weights from this wrapper's state dict (the projection dropped)."""
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
