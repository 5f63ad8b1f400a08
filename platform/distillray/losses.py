"""Distillation losses as pure functions on tensors.

    loss = alpha_kd * KL(softmax(t/T) || softmax(s/T)) * T^2      (Hinton et al. 2015)
         + alpha_ce * CE(s, y)
         + alpha_cos * (1 - cos(h_s, h_t))                          (DistilBERT)
         + alpha_mse * MSE(s, t)

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


@dataclass(frozen=True)
class LossWeights:
    """The temperature and the weight of each term. The defaults are `distill.*`'s, in
    `distillray.config.DistillConfig`: build them with `LossWeights.from_config(cfg.distill)`."""

    temperature: float
    alpha_kd: float
    alpha_ce: float
    alpha_cos: float = 0.0
    alpha_mse: float = 0.0

    @classmethod
    def from_config(cls, distill: DistillConfig) -> LossWeights:
        """The weights of the `distill` config section."""
        return cls(temperature=distill.temperature, alpha_kd=distill.alpha_kd, alpha_ce=distill.alpha_ce,
                   alpha_cos=distill.alpha_cos, alpha_mse=distill.alpha_mse)

    @classmethod
    def hard_labels(cls) -> LossWeights:
        """Cross-entropy on the hard labels only: plain fine-tuning (the teacher's)."""
        return cls.from_config(DistillConfig(alpha_kd=0.0, alpha_ce=1.0))


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor, w: LossWeights,
                 teacher_logits: torch.Tensor | None = None,
                 student_hidden: torch.Tensor | None = None,
                 teacher_hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total and each term on its own (detached), for logging.

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
