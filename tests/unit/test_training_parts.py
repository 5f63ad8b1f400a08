import numpy as np
import pytest
import torch

from distillray.config import OptimConfig, ScheduleConfig, TrainConfig, WorkersConfig
from distillray.data.batches import bucketed_batches
from distillray.distributed.engine import build_ds_config
from distillray.training.loop import param_groups, steps_per_epoch, total_steps


def test_param_groups_no_decay_on_bias_and_layernorm(tiny_teacher):
    from distillray.models import load_classifier

    model = load_classifier(tiny_teacher)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(names[id(p)].endswith("weight") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_ds_config_batch_math_and_cpu_precision():
    c = build_ds_config(ScheduleConfig(batch_size=32, lr=1e-4), OptimConfig(grad_accum=2),
                        WorkersConfig(num_workers=2, zero_stage=3, precision="auto"),
                        world_size=2, total_steps=100, on_gpu=False)
    assert c["train_micro_batch_size_per_gpu"] == 8 and c["gradient_accumulation_steps"] == 2
    assert c["train_batch_size"] == 32 and c["zero_optimization"]["stage"] == 3
    assert not c["bf16"]["enabled"] and not c["fp16"]["enabled"]
    assert c["scheduler"]["params"]["warmup_num_steps"] == 10
    assert c["optimizer"]["params"]["torch_adam"] is True and c["optimizer"]["params"]["fused"] is True
    assert c["gradient_clipping"] == 1.0


@pytest.mark.parametrize("ratio,steps", [(0.1, 4), (0.0, 100)])
def test_ds_config_warms_up_at_least_one_step(ratio, steps):
    """4 steps x 0.1 rounds to 0 warm-up steps, which DeepSpeed's WarmupDecayLR rejects inside
    every worker; warmup_ratio=0 likewise."""
    c = build_ds_config(ScheduleConfig(), OptimConfig(warmup_ratio=ratio), WorkersConfig(), world_size=1,
                        total_steps=steps, on_gpu=False)
    assert c["scheduler"]["params"]["warmup_num_steps"] == 1
    assert c["scheduler"]["params"]["total_num_steps"] == max(steps, 2)


@pytest.fixture(scope="module")
def gloo_rank0():
    """A one-rank gloo process group in this process (an in-memory store: no port), for the
    lifetime of the module (DeepSpeed caches its groups on first use: a second group in the same
    process would meet stale ones)."""
    import torch.distributed as dist

    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOCAL_RANK", "0")  # DeepSpeed asks for it
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        yield
        dist.destroy_process_group()


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_engine_uses_torch_fused_adamw_and_steps(tiny_teacher, gloo_rank0, zero_stage):
    """The real DeepSpeed engine (ZeRO-2 and -3, one gloo rank in this process) builds the optimizer
    the config asks for: torch's fused AdamW, with the no-decay group intact, and it trains."""
    from distillray.distributed.engine import setup_engine
    from distillray.models import load_classifier

    torch.manual_seed(0)
    model = load_classifier(tiny_teacher).train()
    t = ScheduleConfig(batch_size=4, lr=5e-3), OptimConfig(), WorkersConfig(num_workers=1, zero_stage=zero_stage)
    engine = setup_engine(model, param_groups(model, 0.01), build_ds_config(*t, 1, 10, on_gpu=False))
    opt = engine.optimizer.optimizer  # ZeRO wraps the torch optimizer
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]
    losses = _train_on_one_batch(engine, 8)  # one batch, over and over: the loss must fall
    assert losses[-1] < losses[0] - 0.02, losses


def _train_on_one_batch(engine, steps: int) -> list[float]:
    """`steps` engine steps on one fixed random batch of 4; the loss of each."""
    ids = torch.randint(5, 100, (4, 8))
    losses = []
    for _ in range(steps):
        out = engine(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0, 1]))
        engine.backward(out.loss)
        engine.step()
        losses.append(out.loss.item())
    return losses


def test_steps():
    t = TrainConfig(batch_size=32, epochs=3)
    assert steps_per_epoch(1000, t) == 31 and total_steps(1000, t) == 93
    assert total_steps(1000, TrainConfig(batch_size=32, epochs=3, max_steps=10)) == 10


def test_bucketed_batches_cover_every_row_once_and_pad_tightly():
    rng = np.random.default_rng(0)
    n = 100
    rows = {"id": np.arange(n), "input_ids": [np.arange(rng.integers(2, 40)) + 1 for _ in range(n)],
            "label": np.arange(n) % 2, "teacher_logits": rng.standard_normal((n, 2)).astype(np.float32)}
    windows = [{k: v[i:i + 30] for k, v in rows.items()} for i in range(0, n, 30)]
    batches = list(bucketed_batches(iter(windows), micro_batch=8, seed=0, pad_id=0))
    assert all(b["input_ids"].shape[0] == 8 for b in batches)
    seen = sorted(int(x) for b in batches for x in b["teacher_logits"][:, 0].mul(1e6).round())
    assert len(seen) == len(set(seen)) == 96  # 100 rows -> 12 full batches, 4 left over
    total = sum(b["attention_mask"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert real / total > 0.7  # length bucketing keeps padding low
    for b in batches:
        assert torch.equal(b["attention_mask"].sum(1), (b["input_ids"] != 0).sum(1))


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_frozen_word_embeddings_stay_put_while_the_rest_trains(tiny_teacher, gloo_rank0, zero_stage):
    """train.freeze_embeddings through the real engine: the optimizer holds no state for the word
    embeddings, they come out bit-identical, and the other weights still move."""
    import deepspeed

    from distillray.distributed.engine import setup_engine
    from distillray.training.loop import setup_model

    torch.manual_seed(0)
    model = setup_model(str(tiny_teacher), freeze_embeddings=True)
    emb = model.get_input_embeddings().weight
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = param_groups(model, 0.01)
    assert not emb.requires_grad and all(p is not emb for g in groups for p in g["params"])
    t = ScheduleConfig(batch_size=4, lr=5e-3), OptimConfig(), WorkersConfig(num_workers=1, zero_stage=zero_stage)
    engine = setup_engine(model, groups, build_ds_config(*t, 1, 10, on_gpu=False))
    _train_on_one_batch(engine, 3)
    params = list(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=zero_stage == 3):
        after = {n: p.detach().clone() for n, p in params}
    emb_name = next(n for n, p in model.named_parameters() if p is emb)
    assert torch.equal(after[emb_name], before[emb_name])
    moved = [n for n in before if n != emb_name and not torch.equal(after[n], before[n])]
    assert any("classifier" in n for n in moved) and any("layer.0." in n for n in moved), moved
