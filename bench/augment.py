"""Teacher-labelled extra text: what augmented copies cost in precompute time and shard bytes.

On the first 2,000 rows of SST-2 train with the packaged MiniLM teacher (or the fine-tuned
runs/demo/teacher when it exists), fp16 logits, max_length 64 (the sst2 preset):
  plain     : the precompute job on the rows alone (augment off)
  augmented : the same job with augment.copies=10 (default methods: mask, neighbour, n-gram):
              the Augmenter actor and the teacher actors in one Ray Data job, into the same shards
  augmenter : the Augmenter alone in this process (neighbour lookups included), copies/s
and extrapolates, as a projection, to a full SST-2 run with 10 and 20 copies per row.

    python bench/augment.py [--rows 2000] [--copies 10] [--lock /tmp/distillray-cpu.lock]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, cpu_lock, machine, save, sst2_or_exit, table  # noqa: E402

FULL_SST2 = 67_349


def shard_bytes(shard_dir: str) -> int:
    return sum(f.stat().st_size for f in Path(shard_dir).glob("shard-*.parquet"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--lock", default=None)
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-augment"))
    args = p.parse_args()
    sst2 = sst2_or_exit()

    import pyarrow as pa

    from distillray import cli, pipeline
    from distillray.config import load_config
    from distillray.data.augment import ORIGINAL, Augmenter, source_table
    from distillray.models import model_config
    from distillray.preflight import preflight
    from distillray.ray_utils import compute_cpus, ray_session

    cli.setup_logging("INFO")
    demo = REPO / "runs" / "demo" / "teacher"  # make demo's fine-tuned teacher, when there is one
    teacher = [f"teacher.model={demo}"] if (demo / "config.json").exists() else []
    cache = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    base = [f"data.train={sst2 / 'train.tsv'}", f"data.max_rows={args.rows}", f"precompute.cache_dir={cache}",
            "precompute.logits_dtype=float16", f"run.output_dir={args.output_dir}", *teacher]
    plain_cfg = load_config("sst2", base)
    aug_cfg = load_config("sst2", [*base, f"augment.copies={args.copies}"])
    task = preflight(plain_cfg, need_dev=False)
    teacher_dir, _ = pipeline.teacher_init_dir(task)
    mcfg = model_config(teacher_dir)
    n = len(task.train)

    with cpu_lock(args.lock):
        t0 = time.perf_counter()
        augmenter = Augmenter(teacher_dir, aug_cfg.augment.model_dump())
        t_build = time.perf_counter() - t0
        src = source_table(task.train.to_arrow(), [], args.copies, [])
        only_copies = src.set_column(src.column_names.index("pending"), "pending",
                                     pa.array([list(range(args.copies))] * n, pa.list_(pa.int16())))
        t0 = time.perf_counter()
        made = augmenter(only_copies)
        t_aug = time.perf_counter() - t0
        assert made.num_rows == n * args.copies and ORIGINAL not in made.column("id").to_pylist()
        with ray_session(plain_cfg):
            cpus = compute_cpus()
            t0 = time.perf_counter()
            plain = pipeline.precompute(task, teacher_dir)
            t_plain = time.perf_counter() - t0
            from dataclasses import replace

            t0 = time.perf_counter()
            aug = pipeline.precompute(replace(task, cfg=aug_cfg), teacher_dir)
            t_job = time.perf_counter() - t0
    rows_aug = aug.manifest["rows"]
    sources = aug.manifest["sources"]
    assert sources == {"train": n, "augment": n * args.copies, "unlabelled": 0}, sources
    bpr_plain, bpr_aug = shard_bytes(plain.shard_dir) / n, shard_bytes(aug.shard_dir) / rows_aug
    labelled_per_s = rows_aug / t_job

    print(f"\nbench/augment.py on {machine()}: {n} rows of SST-2 train x {args.copies} copies, teacher "
          f"{mcfg.num_hidden_layers}x{mcfg.hidden_size} ({'runs/demo/teacher' if teacher else 'packaged MiniLM'}), "
          f"max_length {aug_cfg.data.max_length}, fp16 logits, {cpus:g} compute CPUs\n")
    print(table([
        ("plain precompute (augment off)", n, t_plain, n / t_plain, "", n / t_plain, bpr_plain),
        (f"augmented precompute (copies={args.copies})", rows_aug, t_job, n / t_job, n * args.copies / t_job,
         labelled_per_s, bpr_aug),
        ("Augmenter alone, in process (no teacher)", n * args.copies, t_aug, n / t_aug, n * args.copies / t_aug, "", ""),
    ], ("run", "rows out", "wall s", "source rows/s", "labelled copies/s", "labelled rows/s", "shard bytes/row")))
    print(f"\nAugmenter set-up per actor (load the teacher, normalise its word embeddings): {t_build:.1f} s; "
          "neighbour lookups are computed on first use and are in the Augmenter's time")
    proj = []
    for copies in (10, 20):
        rows = FULL_SST2 * (1 + copies)
        proj.append((f"full SST-2 x {copies} copies", rows, rows * bpr_aug / 1e9, rows / labelled_per_s / 3600))
    print("\nprojection (not measured): full SST-2 train, same teacher and machine, from the augmented run's "
          "rows/s and bytes/row\n")
    print(table(proj, ("run", "rows", "shard GB", "precompute hours")))
    save(Path(args.output_dir), "augment", {
        "rows": n, "copies": args.copies, "plain_s": t_plain, "augmented_s": t_job, "augmenter_s": t_aug,
        "neighbour_setup_s": t_build, "bytes_per_row_plain": bpr_plain, "bytes_per_row_augmented": bpr_aug,
        "labelled_rows_per_s": labelled_per_s, "projection": proj, "machine": machine()})
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
