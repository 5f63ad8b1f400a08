"""Distillation losses as pure functions on tensors.

    loss = alpha_kd * KL(softmax(t/T) || softmax(s/T)) * T^2      (Hinton et al. 2015)
         + alpha_ce * CE(s, y)
         + alpha_cos * (1 - cos(h_s, h_t))                          (DistilBERT)
         + alpha_mse * MSE(s, t)
         + alpha_hidden * MSE(H_s W, H_t) or 1 - cos(H_s W, H_t)       (TinyBERT, per mapped layer)
         + alpha_attn * MSE(A_s, A_t)                                   (TinyBERT's attention loss)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when T
changes (their magnitude falls as 1/T^2). KL is averaged over the batch ("batchmean"), as in
huggingface/transformers' research_projects/distillation/distiller.py.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F

from distillray.config import DistillConfig


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch.

    student_logits, teacher_logits: (batch, num_labels); teacher logits are raw (T = 1).
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)  # (batch, num_labels)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)  # (batch, num_labels)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


# The label of rows that have none (augmented copies, unlabelled text): CE skips them, KD does not.
UNLABELLED = -1


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on hard labels, averaged over the labelled rows (UNLABELLED rows are skipped;
    a batch with none gives 0). student_logits: (batch, num_labels); labels: (batch,)."""
    summed = F.cross_entropy(student_logits.float(), labels, ignore_index=UNLABELLED, reduction="sum")
    return summed / (labels != UNLABELLED).sum().clamp(min=1)  # no host sync, no 0/0


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """1 - cos(h_s, h_t), averaged. Both (batch, hidden): the final [CLS] hidden states."""
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)  # (batch,)
    return (1.0 - cos).mean()


def mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits, both (batch, num_labels)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def hidden_state_loss(student_states: torch.Tensor, teacher_states: torch.Tensor, mask: torch.Tensor,
                      kind: str = "mse") -> torch.Tensor:
    """TinyBERT's hidden-state loss (Jiao et al. 2020, eq. 4) over the real tokens of mapped layers.

    student_states: (batch, layers, seq, hidden_t), already projected to the teacher's width;
    teacher_states: (batch, layers, seq, hidden_t); mask: (batch, seq), 1 on real tokens.
    kind: "mse" (mean over tokens, layers and features) or "cosine" (1 - cos per token, mean).
    """
    s, t = student_states.float(), teacher_states.float()
    m = mask.to(s.dtype)[:, None, :]  # (batch, 1, seq)
    n = m.sum().clamp(min=1) * s.shape[1]  # real tokens x layers
    if kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(s, t, dim=-1)  # (batch, layers, seq)
    else:
        per_token = (s - t).pow(2).mean(-1)  # (batch, layers, seq)
    return (per_token * m).sum() / n


def attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention loss (Jiao et al. 2020, eq. 3): MSE between attention distributions,
    per head, over the (query, key) pairs of real tokens. TinyBERT's code compares the scores
    before softmax; the distributions are what Hugging Face models return, and carry no -inf.

    student_attn: (batch, layers, heads_s, seq, seq); teacher_attn: (batch, layers, heads_t, seq,
    seq) with heads_t a multiple of heads_s: each student head matches the mean of its group of
    heads_t / heads_s consecutive teacher heads (a student truncated from the teacher keeps its
    first heads whole). mask: (batch, seq).
    """
    s, t = student_attn.float(), teacher_attn.float()
    hs, ht = s.shape[2], t.shape[2]
    if ht % hs:
        raise ValueError(f"teacher heads ({ht}) must be a multiple of student heads ({hs})")
    if ht != hs:
        t = t.unflatten(2, (hs, ht // hs)).mean(3)  # (batch, layers, heads_s, seq, seq)
    m = mask.to(s.dtype)
    pair = (m[:, :, None] * m[:, None, :])[:, None, None]  # (batch, 1, 1, seq, seq)
    n = pair.sum().clamp(min=1) * s.shape[1] * hs
    return ((s - t).pow(2) * pair).sum() / n


@dataclass(frozen=True)
class LossWeights:
    """The temperature and the weight of each term. The defaults are `distill.*`'s, in
    `distillray.config.DistillConfig`: build them with `LossWeights.from_config(cfg.distill)`."""

    temperature: float
    alpha_kd: float
    alpha_ce: float
    alpha_cos: float = 0.0
    alpha_mse: float = 0.0
    alpha_hidden: float = 0.0
    alpha_attn: float = 0.0
    hidden_loss: str = "mse"  # "mse" | "cosine"

    @property
    def layer_terms(self) -> bool:
        """Whether a term needs the student's and the teacher's intermediate layers."""
        return self.alpha_hidden > 0 or self.alpha_attn > 0

    @classmethod
    def from_config(cls, distill: DistillConfig) -> LossWeights:
        """The weights of the `distill` config section."""
        return cls(temperature=distill.temperature, alpha_kd=distill.alpha_kd, alpha_ce=distill.alpha_ce,
                   alpha_cos=distill.alpha_cos, alpha_mse=distill.alpha_mse,
                   alpha_hidden=distill.alpha_hidden, alpha_attn=distill.alpha_attn,
                   hidden_loss=distill.hidden_loss)

    def general(self) -> LossWeights:
        """The task-agnostic stage's weights: the intermediate-layer terms only, no labels and no
        logits (TinyBERT's general distillation)."""
        return LossWeights(temperature=self.temperature, alpha_kd=0.0, alpha_ce=0.0,
                           alpha_hidden=self.alpha_hidden, alpha_attn=self.alpha_attn,
                           hidden_loss=self.hidden_loss)

    @classmethod
    def hard_labels(cls) -> LossWeights:
        """Cross-entropy on the hard labels only: plain fine-tuning (the teacher's)."""
        return cls.from_config(DistillConfig(alpha_kd=0.0, alpha_ce=1.0))


@dataclass(frozen=True)
class LayerOutputs:
    """The mapped intermediate layers of a batch, student and teacher in the same order (student
    layer j of the map against its teacher layer). Shapes as `hidden_state_loss` and
    `attention_loss` take them; the attention pair is None when alpha_attn is 0, the states when
    alpha_hidden is 0."""

    mask: torch.Tensor  # (batch, seq)
    student_states: torch.Tensor | None = None  # (batch, layers, seq, hidden_t), projected
    teacher_states: torch.Tensor | None = None  # (batch, layers, seq, hidden_t)
    student_attn: torch.Tensor | None = None  # (batch, layers, heads_s, seq, seq)
    teacher_attn: torch.Tensor | None = None  # (batch, layers, heads_t, seq, seq)


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor, w: LossWeights,
                 teacher_logits: torch.Tensor | None = None,
                 student_hidden: torch.Tensor | None = None,
                 teacher_hidden: torch.Tensor | None = None,
                 layers: LayerOutputs | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total and each term on its own (detached), for logging. `layers`: the
    mapped intermediate layers of both models (needed when alpha_hidden or alpha_attn > 0).

    Terms whose weight is 0 are not computed. With every teacher weight at 0 this is plain
    fine-tuning, which is how the one train loop also fine-tunes teachers.
    """
    terms: dict[str, torch.Tensor] = {}
    total = student_logits.new_zeros((), dtype=torch.float32)
    if w.alpha_ce > 0:
        terms["loss_ce"] = ce_loss(student_logits, labels)
        total = total + w.alpha_ce * terms["loss_ce"]
    if w.alpha_kd > 0 or w.alpha_mse > 0:
        if teacher_logits is None:
            raise ValueError("alpha_kd/alpha_mse > 0 but the batch has no teacher_logits")
        if w.alpha_kd > 0:
            terms["loss_kd"] = kd_loss(student_logits, teacher_logits, w.temperature)
            total = total + w.alpha_kd * terms["loss_kd"]
        if w.alpha_mse > 0:
            terms["loss_mse"] = mse_loss(student_logits, teacher_logits)
            total = total + w.alpha_mse * terms["loss_mse"]
    if w.alpha_cos > 0:
        if student_hidden is None or teacher_hidden is None:
            raise ValueError("alpha_cos > 0 but hidden states are missing")
        terms["loss_cos"] = cosine_loss(student_hidden, teacher_hidden)
        total = total + w.alpha_cos * terms["loss_cos"]
    if w.layer_terms:
        if layers is None:
            raise ValueError("alpha_hidden/alpha_attn > 0 but the intermediate layers are missing")
        if w.alpha_hidden > 0:
            terms["loss_hidden"] = hidden_state_loss(layers.student_states, layers.teacher_states, layers.mask,
                                                     w.hidden_loss)
            total = total + w.alpha_hidden * terms["loss_hidden"]
        if w.alpha_attn > 0:
            terms["loss_attn"] = attention_loss(layers.student_attn, layers.teacher_attn, layers.mask)
            total = total + w.alpha_attn * terms["loss_attn"]
    return total, {k: v.detach() for k, v in terms.items()}


QA_MASKED = -1e4  # logit of positions no answer may start or end at: exp() underflows to 0 in float32


def qa_distill_loss(student_start: torch.Tensor, student_end: torch.Tensor,
                    start_positions: torch.Tensor, end_positions: torch.Tensor, w: LossWeights,
                    teacher_start: torch.Tensor | None = None, teacher_end: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Extractive QA: KD on the start and on the end distributions plus CE on the gold positions,
    each the mean of its start and end terms, as Hugging Face's run_squad_w_distillation.

        loss = alpha_kd * (KL_start + KL_end) / 2 * T^2  +  alpha_ce * (CE_start + CE_end) / 2

    student_*, teacher_*: (batch, seq) logits over token positions; start/end_positions: (batch,)
    gold token indexes, 0 ([CLS]) where the answer is not in the window. mask: (batch, seq) bool,
    True where an answer may start or end ([CLS] and the context tokens); the other positions
    (question, [SEP], padding, and whatever a shard left there) get QA_MASKED in student and
    teacher alike, so they carry no probability and no gradient. Returns the total and each term
    (detached), like `distill_loss`.
    """
    if w.alpha_cos > 0 or w.alpha_mse > 0:
        raise ValueError("alpha_cos and alpha_mse are not defined for extractive QA; set them to 0")

    def masked(x: torch.Tensor) -> torch.Tensor:  # (batch, seq) float32
        x = x.float()
        return x if mask is None else x.masked_fill(~mask.bool(), QA_MASKED)

    s_start, s_end = masked(student_start), masked(student_end)  # (batch, seq)
    terms: dict[str, torch.Tensor] = {}
    total = s_start.new_zeros(())
    if w.alpha_ce > 0:
        terms["loss_ce"] = (F.cross_entropy(s_start, start_positions) +
                            F.cross_entropy(s_end, end_positions)) / 2
        total = total + w.alpha_ce * terms["loss_ce"]
    if w.alpha_kd > 0:
        if teacher_start is None or teacher_end is None:
            raise ValueError("alpha_kd > 0 but the batch has no teacher start/end logits")
        terms["loss_kd"] = (kd_loss(s_start, masked(teacher_start), w.temperature) +
                            kd_loss(s_end, masked(teacher_end), w.temperature)) / 2
        total = total + w.alpha_kd * terms["loss_kd"]
    return total, {k: v.detach() for k, v in terms.items()}
