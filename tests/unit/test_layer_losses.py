"""Intermediate-layer distillation: TinyBERT's hidden-state and attention losses, the projection
to the teacher's width, students by depth and width (copy, truncate, scratch), the stored
teacher layers' round trip through a shard table and a padded batch, and the config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillray.config import load_config
from distillray.data.batches import StateLayout, collate
from distillray.data.shards import make_table
from distillray.errors import ConfigError
from distillray.losses import (
    UNLABELLED,
    LayerOutputs,
    LossWeights,
    attention_loss,
    distill_loss,
    hidden_state_loss,
)
from distillray.models import LayerDistillModel, build_student, load_classifier, student_shape
from distillray.models.student import distill_layer_map, uniform_layers


def _mask(lengths: list[int], n: int) -> torch.Tensor:
    return torch.tensor([[1] * k + [0] * (n - k) for k in lengths])


def test_hidden_loss_is_zero_for_identical_states_and_ignores_padding():
    torch.manual_seed(0)
    t = torch.randn(2, 3, 5, 8)  # (batch, layers, seq, hidden)
    mask = _mask([5, 3], 5)
    for kind in ("mse", "cosine"):
        assert hidden_state_loss(t, t.clone(), mask, kind).item() == pytest.approx(0.0, abs=1e-6)
        s = t + 0.1 * torch.randn_like(t)
        base = hidden_state_loss(s, t, mask, kind)
        assert base.item() > 0
        junk = s.clone()
        junk[1, :, 3:] = 100.0  # padding positions of row 1: no effect
        assert hidden_state_loss(junk, t, mask, kind).item() == pytest.approx(base.item(), rel=1e-6)
    # mse by hand: mean over real tokens x layers of the per-token mean squared error
    s = t + 1.0
    assert hidden_state_loss(s, t, mask, "mse").item() == pytest.approx(1.0, rel=1e-6)


def test_attention_loss_zero_when_equal_groups_teacher_heads_and_ignores_padding():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 1, 2, 4, 4), -1)  # student: 2 heads
    mask = _mask([4, 2], 4)
    assert attention_loss(a, a.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    # a 4-head teacher whose head pairs average to the student's heads: loss 0
    d = 0.05 * torch.randn(2, 1, 2, 4, 4)
    teacher = torch.stack([a + d, a - d], 3).flatten(2, 3)  # (batch, layers, 4, seq, seq)
    assert attention_loss(a, teacher, mask).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.softmax(torch.randn(2, 1, 2, 4, 4), -1)
    base = attention_loss(other, a, mask)
    junk = other.clone()
    junk[1, :, :, 2:, :] = 5.0  # queries that are padding
    junk[1, :, :, :, 2:] = 5.0  # keys that are padding
    assert base.item() > 0 and attention_loss(junk, a, mask).item() == pytest.approx(base.item(), rel=1e-6)
    with pytest.raises(ValueError, match="multiple of student heads"):
        attention_loss(torch.zeros(1, 1, 3, 2, 2), torch.zeros(1, 1, 4, 2, 2), _mask([2], 2))


def test_projection_shapes_gradients_and_export_drop_it(tmp_path):
    from tiny import make_tiny_bert

    student = load_classifier(make_tiny_bert(tmp_path / "s", layers=2, hidden=32, heads=2))
    teacher = load_classifier(make_tiny_bert(tmp_path / "t", layers=4, hidden=64, heads=4, seed=1))
    teacher.set_attn_implementation("eager")
    wrapped = LayerDistillModel(student, [0, 1], teacher_hidden=64, hidden=True, attention=True)
    assert tuple(wrapped.proj.weight.shape) == (64, 32)
    ids = torch.randint(1000, 2000, (3, 6))
    mask = _mask([6, 4, 2], 6)
    out, states, attn = wrapped(layer_outputs=True, input_ids=ids, attention_mask=mask)
    assert states.shape == (3, 2, 6, 64) and attn.shape == (3, 2, 2, 6, 6)
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    layers = LayerOutputs(mask=mask, student_states=states, student_attn=attn,
                          teacher_states=torch.stack([t.hidden_states[2], t.hidden_states[4]], 1),
                          teacher_attn=torch.stack([t.attentions[1], t.attentions[3]], 1))
    # the task-agnostic stage: layer terms only, labels all UNLABELLED, no teacher logits
    w = LossWeights(temperature=2.0, alpha_kd=0.5, alpha_ce=0.5, alpha_hidden=1.0, alpha_attn=1.0).general()
    loss, terms = distill_loss(out.logits, torch.full((3,), UNLABELLED), w, layers=layers)
    assert set(terms) == {"loss_hidden", "loss_attn"} and loss.item() > 0
    loss.backward()
    assert wrapped.proj.weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    plain = LayerDistillModel.student_state(wrapped.state_dict())
    assert set(plain) == set(student.state_dict())  # no proj.* keys
    assert wrapped(input_ids=ids, attention_mask=mask).logits.shape == (3, 2)  # evaluation: a plain call


def test_no_projection_when_widths_match(tiny_teacher):
    w = LayerDistillModel(load_classifier(tiny_teacher), [0], teacher_hidden=32, hidden=True, attention=False)
    assert w.proj is None


def test_students_by_depth_and_width(tiny_teacher):
    cfg = load_config(None, ["student.init=truncate", "student.num_layers=2", "student.hidden_size=16"])
    teacher = load_classifier(tiny_teacher)  # 4 layers, hidden 32, 2 heads
    shape = student_shape(teacher.config, cfg.student)
    assert shape == {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 1, "intermediate_size": 32}
    small = build_student(teacher, student=cfg.student)
    assert small.config.hidden_size == 16 and small.config.num_hidden_layers == 2
    # truncate: uniform layers [1, 3]; each matrix is the teacher's top-left block
    t_q = teacher.bert.encoder.layer[3].attention.self.query.weight
    assert torch.equal(small.bert.encoder.layer[1].attention.self.query.weight, t_q[:16, :16])
    assert torch.equal(small.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight[:, :16])
    scratch = build_student(teacher, student=load_config(None, ["student.init=scratch", "student.num_layers=3"]).student)
    assert scratch.config.num_hidden_layers == 3
    assert not torch.equal(scratch.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert uniform_layers(3, 6) == [1, 3, 5] and uniform_layers(2, 4) == [1, 3] and uniform_layers(4, 4) == [0, 1, 2, 3]
    # the default layer map: the layers the student was built from; -1 skips a student layer
    copy_cfg = load_config(None, ["student.layers=[0,2]"]).student
    assert distill_layer_map(copy_cfg, None, 4) == [(0, 0), (1, 2)]
    assert distill_layer_map(copy_cfg, [-1, 3], 4) == [(1, 3)]


def test_stored_layers_round_trip_through_a_shard_table_and_a_padded_batch():
    rng = np.random.default_rng(0)
    lens = [3, 5]
    states = [rng.standard_normal((2, n, 4)).astype(np.float32) for n in lens]  # (layers, len, hidden)
    attn = [rng.random((2, 3, n, n)).astype(np.float32) for n in lens]  # (layers, heads, len, len)
    table = make_table(np.arange(2), [[1] * n for n in lens], np.array([0, UNLABELLED]),
                       np.zeros((2, 2), np.float32), None, "float16", None, states, attn)
    rows = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    rows["input_ids"] = table.column("input_ids").to_pylist()
    b = collate(rows, np.arange(2), 0, StateLayout(layers=2, hidden=4, heads=3))
    assert b["teacher_states"].shape == (2, 2, 5, 4) and b["teacher_attn"].shape == (2, 2, 3, 5, 5)
    assert torch.allclose(b["teacher_states"][0, :, :3], torch.from_numpy(states[0]), atol=1e-2)
    assert b["teacher_states"][0, :, 3:].abs().sum() == 0  # padding
    assert torch.allclose(b["teacher_attn"][1], torch.from_numpy(attn[1]), atol=1e-2)


@pytest.mark.parametrize("overrides, needle", [
    (["student.general_distill_steps=5"], "alpha_hidden and alpha_attn are 0"),
    (["student.layers=[0,2]", "student.num_layers=3"], "student.num_layers=3"),
    (["student.init=scratch", "student.layers=[0,2]"], "student.num_layers=2 instead"),
    (["distill.layer_map=[-1,-1]"], "at least one must match"),
])
def test_layer_config_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides, needle", [
    (["student.hidden_size=16"], "student.init=truncate"),
    (["student.init=truncate", "student.hidden_size=20"], "multiple of the teacher's head size 16"),
    (["student.init=truncate", "student.num_layers=5"], "the teacher only 4"),
    (["student.init=scratch", "student.num_layers=2", "distill.layer_map=[1,7]", "distill.alpha_hidden=1"], "layers 0..3"),
])
def test_student_shape_errors_before_ray(tiny_teacher, overrides, needle):
    from distillray.preflight import check_teacher

    cfg = load_config(None, [f"teacher.model={tiny_teacher}", *overrides])
    with pytest.raises(ConfigError, match=needle):
        check_teacher(cfg)
