import math

import pytest
import torch

from distillray.config import DistillConfig
from distillray.losses import LossWeights, ce_loss, cosine_loss, distill_loss, kd_loss, mse_loss


def test_kd_matches_hand_computation_with_t_squared():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    T = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (1 + math.e), math.e / (1 + math.e)]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert kd_loss(s, t, T).item() == pytest.approx(kl * T * T, rel=1e-5)


def test_kd_is_zero_for_identical_logits_and_batchmean():
    x = torch.randn(8, 5)
    assert kd_loss(x, x.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.randn(1, 3), torch.randn(1, 3)
    assert kd_loss(a.repeat(4, 1), b.repeat(4, 1), 2.0).item() == pytest.approx(kd_loss(a, b, 2.0).item(), rel=1e-5)


def test_ce_cos_mse_by_hand():
    logits = torch.tensor([[2.0, 0.0]])
    assert ce_loss(logits, torch.tensor([0])).item() == pytest.approx(-math.log(math.e**2 / (math.e**2 + 1)), rel=1e-6)
    h1, h2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert cosine_loss(h1, h2).item() == pytest.approx(1.0)
    assert cosine_loss(h1, h1).item() == pytest.approx(0.0, abs=1e-6)
    assert mse_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.5)


def test_weights_combine_terms():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    hs, ht = torch.randn(4, 8), torch.randn(4, 8)
    w = LossWeights(temperature=3.0, alpha_kd=0.6, alpha_ce=0.4, alpha_cos=0.2, alpha_mse=0.1)
    total, terms = distill_loss(s, y, w, t, hs, ht)
    want = 0.6 * kd_loss(s, t, 3.0) + 0.4 * ce_loss(s, y) + 0.2 * cosine_loss(hs, ht) + 0.1 * mse_loss(s, t)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(terms) == {"loss_kd", "loss_ce", "loss_cos", "loss_mse"}


def test_finetune_weights_need_no_teacher_and_skip_zero_terms():
    s, y = torch.randn(4, 2, requires_grad=True), torch.tensor([0, 1, 1, 0])
    total, terms = distill_loss(s, y, LossWeights.hard_labels())
    assert set(terms) == {"loss_ce"} and total.requires_grad
    with pytest.raises(ValueError, match="teacher_logits"):
        distill_loss(s, y, LossWeights.from_config(DistillConfig(alpha_kd=0.5, alpha_ce=0.5)))
