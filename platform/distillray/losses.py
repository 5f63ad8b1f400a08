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
