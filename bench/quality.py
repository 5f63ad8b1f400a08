"""Quality and speed of distillation on SST-2, end to end on real Ray:

  teacher  = the packaged MiniLM fine-tuned on a seeded 20,000-row slice of train
  student  = teacher layers [0, 2, 4], distilled from shards over all 67,349 train rows
  baseline = the same student, same init, hard labels only (distill.alpha_kd=0)
  online   = seconds/step with a teacher forward every step vs reading the shards (the student
             step alone, and through the platform's DeepSpeed engine)

    python bench/quality.py                       # the issue's sizes
    python bench/quality.py --student-epochs 1 --lock /tmp/distillray-cpu.lock

Prints a table; writes runs/bench-quality/quality.json. Every stage goes through the same
pipeline functions as jobs/distill.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, cpu_lock, machine, save, sst2_or_exit, table  # noqa: E402


def online_vs_offline(teacher_dir: str, init_dir: str, shard_dir: str, manifest: dict, steps: int,
                      cfg, w) -> dict[str, float]:
    """Seconds per training step of the same student: logits read from shards (offline) vs a
    teacher forward pass every step (online). Same batches, in-process, fp32, timed two ways:

      lean   = the student step alone (forward, loss, backward, torch's fused AdamW: the optimizer
               the platform's DeepSpeed config builds)
      engine = through the platform's own DeepSpeed engine (`build_ds_config` + `setup_engine`,
               workers.zero_stage, one gloo rank in this process), as a one-worker run trains
      engine0 = the same engine with workers.zero_stage=0: on one rank ZeRO has nothing to partition,
               and this row shows what its per-step bookkeeping costs
    """
    import os

    import numpy as np
    import pyarrow.parquet as pq
    import torch
    import torch.distributed as dist

    from distillray.config import ScheduleConfig
    from distillray.data.batches import collate
    from distillray.data.shards import shard_paths
    from distillray.distributed.engine import build_ds_config, setup_engine
    from distillray.losses import distill_loss
    from distillray.models import load_classifier
    from distillray.training.loop import param_groups, setup_model

    schedule = ScheduleConfig.of(cfg.train)
    table_ = pq.read_table(shard_paths(shard_dir, manifest)[0])
    rows = {c: table_.column(c).to_pylist() for c in ("input_ids", "label", "teacher_logits")}
    rng = np.random.default_rng(0)
    batches = [collate(rows, rng.choice(len(rows["label"]), schedule.batch_size, replace=False), 0)
               for _ in range(steps)]
    if not dist.is_initialized():  # one rank, an in-memory store: no port
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asks for it
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    one_worker = cfg.workers.model_copy(update={"num_workers": 1})
    no_accum = cfg.optim.model_copy(update={"grad_accum": 1})
    out = {}
    for how in ("lean", "engine", "engine0"):
        for mode in ("offline", "online"):
            torch.manual_seed(0)
            student = setup_model(init_dir, cfg.train.freeze_embeddings)  # as the train loop builds it
            teacher = load_classifier(teacher_dir).eval() if mode == "online" else None
            if how.startswith("engine"):
                workers = one_worker.model_copy(update={"zero_stage": 0}) if how == "engine0" else one_worker
                engine = setup_engine(student, param_groups(student, 0.01),
                                      build_ds_config(schedule, no_accum, workers, 1, steps, on_gpu=False))
                model, backward, step = engine, engine.backward, engine.step
            else:
                opt = torch.optim.AdamW(param_groups(student, 0.01), lr=1e-4, fused=True)
                model, backward = student, torch.Tensor.backward

                def step(opt=opt):
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            times = []
            for b in batches:
                t0 = time.perf_counter()
                logits_t = b["teacher_logits"]
                if teacher is not None:
                    with torch.inference_mode():
                        logits_t = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                    logits_t = logits_t.clone()
                s = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                loss, _ = distill_loss(s, b["labels"], w, teacher_logits=logits_t)
                backward(loss)
                step()
                times.append(time.perf_counter() - t0)
            out[f"{how}_{mode}_s_per_step"] = float(np.median(times[5:]))
        out[f"{how}_online_over_offline"] = out[f"{how}_online_s_per_step"] / out[f"{how}_offline_s_per_step"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-rows", type=int, default=20_000)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--student-rows", type=int, default=None, help="default: all of train")
    p.add_argument("--student-epochs", type=int, default=2)
    p.add_argument("--student-lr", type=float, default=2e-4)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha-kd", type=float, default=0.5)
    p.add_argument("--online-steps", type=int, default=300, help="steps timed per mode (the issue: a few hundred)")
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-quality"))
    p.add_argument("--lock", default=None, help="exclusive lock file held around each stage")
    p.add_argument("--skip-hard-label", action="store_true", help="no hard-label baseline (saves a student run)")
    p.add_argument("--hard-label-from", default=None,
                   help="evaluate this existing hard-label student (same teacher, init and data) instead of training one")
    p.add_argument("--evaluate-only", action="store_true",
                   help="reuse teacher/, student/ (and student-hard/) already in --output-dir: evaluate and time only")
    p.add_argument("overrides", nargs="*", help="extra config key=value")
    args = p.parse_args()
    sst2_or_exit()

    from distillray import cli, pipeline
    from distillray.config import load_config
    from distillray.distributed.ray_train import FitOptions
    from distillray.evaluation import evaluate_dirs
    from distillray.losses import LossWeights
    from distillray.preflight import preflight
    from distillray.ray_utils import ray_session

    base = [f"finetune.max_rows={args.teacher_rows}", "data.sample=random", "data.sample_seed=0",
            f"finetune.epochs={args.teacher_epochs}", f"finetune.lr={args.teacher_lr}",
            f"train.epochs={args.student_epochs}", f"train.lr={args.student_lr}", "student.layers=[0,2,4]",
            f"distill.temperature={args.temperature}", f"distill.alpha_kd={args.alpha_kd}",
            f"distill.alpha_ce={round(1 - args.alpha_kd, 6)}", "checkpoint.every=1000",
            "train.eval_every=0", "train.log_every=50", f"run.output_dir={args.output_dir}"]
    if args.student_rows:
        base.append(f"data.max_rows={args.student_rows}")
    cfg = load_config("sst2", base + args.overrides)
    cli.setup_logging("INFO")
    t_all = time.time()
    task = preflight(cfg)
    out = task.out
    teacher = sfit = None
    more_timings: dict[str, float] = {}
    hard_dir = Path(args.hard_label_from) if args.hard_label_from else out / "student-hard"
    if args.hard_label_from and not (hard_dir / "config.json").exists():
        sys.exit(f"--hard-label-from {hard_dir}: no exported model there (config.json missing); "
                 "point it at a student-hard/ dir written by an earlier bench/quality.py run")
    with ray_session(cfg):
        if args.evaluate_only:
            teacher_dir = str(out / "teacher")
            shards = pipeline.precompute(task, teacher_dir)  # a no-op: the cache is complete
        else:
            with cpu_lock(args.lock):
                teacher = pipeline.prepare_teacher(task)
                teacher_dir = teacher.dir
            with cpu_lock(args.lock):
                shards = pipeline.precompute(task, teacher_dir)
        checked = pipeline.check_shards(task, shards.shard_dir, teacher_dir)
        init_dir = pipeline.student_init_dir(task, teacher_dir, cfg.student.layers)
        if not args.evaluate_only:
            with cpu_lock(args.lock):
                sfit = pipeline.distill_student(cfg, checked, init_dir, task.dev, str(out / "student"))
            if not (args.skip_hard_label or args.hard_label_from):
                # its own run dir (metrics, Ray Train runs), so it does not overwrite the student's
                hard_cfg = load_config("sst2", base + args.overrides + [
                    "distill.alpha_kd=0", "distill.alpha_ce=1", f"run.output_dir={out / 'hard-labels'}"])
                with cpu_lock(args.lock):
                    hard_fit = pipeline.distill_student(hard_cfg, checked, init_dir, task.dev, str(hard_dir),
                                                        FitOptions(name=f"{cfg.run_name}-hard-labels"))
                more_timings["hard_label_student"] = hard_fit.seconds
    with cpu_lock(args.lock):
        report = pipeline.finish(task, teacher, sfit, shards,
                                 timings=pipeline.stage_timings(task, teacher, shards, sfit, **more_timings))
        # accuracy of both on the same dev rows, and the rows only one of them gets right
        both = evaluate_dirs({"student": out / "student", "hard": hard_dir}, task.dev.inputs(), task.dev.labels,
                             task.labels.names, max_length=cfg.data.max_length, speed=False,
                             compare_to="hard") if hard_dir.exists() else {}
        paired = both.get("student", {}).get("vs_hard", {})
        hard = both.get("hard", {"accuracy": float("nan")})
        w = LossWeights(temperature=cfg.distill.temperature, alpha_kd=cfg.distill.alpha_kd,
                        alpha_ce=cfg.distill.alpha_ce)
        online = online_vs_offline(teacher_dir, init_dir, checked.dir, checked.manifest, args.online_steps,
                                   cfg, w)
    t, s, q = report["teacher"], report["student"], report.get("student_int8", {})
    per_round = report["speedup_rounds"]
    rows = [
        ("teacher dev accuracy", t["accuracy"], ">= 0.86", "yes" if t["accuracy"] >= 0.86 else "MISS"),
        ("student dev accuracy", s["accuracy"], "", ""),
        ("hard-label student dev accuracy", hard["accuracy"], "< student",
         "yes" if s["accuracy"] > hard["accuracy"] else "MISS"),
        ("dev rows only the distilled student gets right", paired.get("only_this_right", ""), "", ""),
        ("dev rows only the hard-label student gets right", paired.get("only_baseline_right", ""), "", ""),
        ("McNemar exact p (distilled vs hard-label)", paired.get("mcnemar_p", ""), "< 0.05: beyond noise",
         "yes" if paired.get("mcnemar_p", 1.0) < 0.05 else "no"),
        ("retention (student / teacher)", report["retention"], ">= 0.97", "yes" if report["retention"] >= 0.97 else "MISS"),
        ("speedup (throughput, batch 64)", report["speedup"], ">= 1.8", "yes" if report["speedup"] >= 1.8 else "MISS"),
        *[(f"speedup, {which} of {len(per_round)} alternating rounds", f(per_round), "", "")
          for which, f in (("lowest", min), ("highest", max))],
        ("teacher params", t["params"], "", ""), ("student params", s["params"], "", ""),
        ("teacher latency ms (batch 1)", t["latency_ms"], "", ""), ("student latency ms (batch 1)", s["latency_ms"], "", ""),
        ("teacher throughput ex/s", t["throughput"], "", ""), ("student throughput ex/s", s["throughput"], "", ""),
        ("int8 student accuracy", q.get("accuracy", float("nan")), "", ""),
        ("int8 student throughput ex/s", q.get("throughput", float("nan")), "", ""),
        *[row for how, what in (("lean", "student step, fused AdamW"),
                                ("engine", f"DeepSpeed ZeRO-{cfg.workers.zero_stage} engine, 1 rank"),
                                ("engine0", "DeepSpeed engine, ZeRO off, 1 rank"))
          for row in ((f"offline s/step ({what})", online[f"{how}_offline_s_per_step"], "", ""),
                      (f"online s/step ({what})", online[f"{how}_online_s_per_step"], "", ""),
                      (f"online / offline ({what})", online[f"{how}_online_over_offline"], ">= 1.5",
                       "yes" if online[f"{how}_online_over_offline"] >= 1.5 else "MISS"))],
    ]
    rows += [(f"wall time: {k} (s)", v, "", "") for k, v in report["timings"].items()]
    rows.append(("wall time: total (s)", time.time() - t_all, "", ""))
    print(f"\nbench/quality.py on {machine()}")
    print(f"teacher fine-tuned on {args.teacher_rows} seeded rows x {args.teacher_epochs} epochs; student on "
          f"{report['dataset']['train_rows']} rows x {args.student_epochs} epochs; dev {report['dataset']['dev_rows']} rows\n")
    print(table(rows, ("measure", "value", "target", "met")))
    save(out, "quality", {"report": report, "hard_label_student": hard, "distilled_vs_hard": paired,
                          "online": online, "args": vars(args), "machine": machine(), "timings": report["timings"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
