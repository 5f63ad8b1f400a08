"""report.json (for machines) and report.md (for people) of one distillation run, with plots.

report.md opens with the answer: how much of the teacher's accuracy the student keeps, how much
smaller and faster it is. Everything else (per-stage timings, config, dataset) follows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def build_report(evals: dict[str, dict[str, Any]], config: dict[str, Any], dataset: dict[str, Any],
                 timings: dict[str, float], training: dict[str, Any] | None = None,
                 tune: dict[str, Any] | None = None) -> dict[str, Any]:
    t, s = evals["teacher"], evals["student"]
    metric = config.get("data", {}).get("metric", "accuracy")  # the headline: accuracy or f1
    report: dict[str, Any] = {
        "teacher": t,
        "student": s,
        "metric": metric,
        "retention": s[metric] / t[metric] if t[metric] else None,
        "retention_by_metric": {m: s[m] / t[m] if t[m] else None for m in ("accuracy", "exact_match", "f1")
                                if m in t and m in s},
        "speedup": s["throughput"] / t["throughput"] if t.get("throughput") else None,
        "latency_speedup": t["latency_ms"] / s["latency_ms"] if s.get("latency_ms") else None,
        "speedup_rounds": [b / a for a, b in zip(t.get("throughput_rounds", []), s.get("throughput_rounds", []))],
        "size_ratio": s["size_bytes"] / t["size_bytes"] if t.get("size_bytes") else None,
        "config": config,
        "dataset": dataset,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    if "student_int8" in evals:
        q = evals["student_int8"]
        report["student_int8"] = q
        report["int8"] = {"retention": q[metric] / t[metric] if t[metric] else None,
                          "speedup": q["throughput"] / t["throughput"] if t.get("throughput") else None}
    if training:
        report["training"] = training
    if tune:
        report["tune"] = tune
    return report


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _pct(x: float | None, digits: int) -> str:
    """A ratio as a percentage; n/a when the teacher scored 0 (e.g. F1 with no positive predicted)."""
    return "n/a" if x is None else f"{x:.{digits}%}"


def render_markdown(r: dict[str, Any], plots: list[str]) -> str:
    t, s = r["teacher"], r["student"]
    metric = r.get("metric", "accuracy")
    shown = {"accuracy": "accuracy", "f1": "F1"}[metric]
    with_f1 = "f1" in t  # binary tasks: F1 of the positive class beside accuracy
    qa = "exact_match" in t  # extractive QA: the official SQuAD EM and F1
    if qa:
        shown = "SQuAD F1"
    cols = [("exact_match", "EM"), ("f1", "F1")] if qa else [("accuracy", "accuracy")] + ([("f1", "F1")] if with_f1 else [])
    batch = t.get("throughput_batch", 64)
    rows = [("teacher", t), ("student", s)] + ([("student int8", r["student_int8"])] if "student_int8" in r else [])
    lines = [
        "# distillray report",
        "",
        f"**The student keeps {_pct(r['retention'], 1)} of the teacher's {shown} "
        f"({s[metric]:.2%} vs {t[metric]:.2%} on {t['rows']} dev {'questions' if qa else 'rows'}) with "
        f"{s['params'] / t['params']:.0%} of its parameters, and runs {r['speedup']:.2f}x faster "
        f"(throughput at batch {batch}; {r['latency_speedup']:.2f}x at batch 1).**",
        "",
        f"| model | layers |{''.join(f' {title} |' for _, title in cols)} params | size | latency (batch 1, median) "
        f"| throughput (batch {batch}) |",
        f"|---|---:|{'---:|' * len(cols)}---:|---:|---:|---:|",
    ]
    for name, e in rows:
        scores = "".join(f" {e[key]:.2%} |" for key, _ in cols)
        lines.append(f"| {name} | {e['layers']} |{scores} {e['params'] / 1e6:.2f} M | "
                     f"{_fmt_bytes(e['size_bytes'])} | {e['latency_ms']:.2f} ms | {e['throughput']:.0f} "
                     f"{'questions' if qa else 'ex'}/s |")
    lines += ["", f"Retention {_pct(r['retention'], 2)} · speed-up {r['speedup']:.2f}x · size "
                  f"{r['size_ratio']:.0%} of the teacher's weights", ""]
    if r.get("speedup_rounds"):
        lines += [f"Throughput is the median of {len(r['speedup_rounds'])} rounds in which the models take "
                  f"turns over the same dev texts; the speed-up per round ranged "
                  f"{min(r['speedup_rounds']):.2f}x-{max(r['speedup_rounds']):.2f}x.", ""]
    if "int8" in r:
        lines += [f"int8 dynamic quantisation of the student: retention {_pct(r['int8']['retention'], 2)}, "
                  f"speed-up {r['int8']['speedup']:.2f}x over the teacher.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    tr = r.get("training") or {}
    if tr:
        dev_key = "dev_accuracy" if metric == "accuracy" else "dev_f1"
        lines += ["## Training", "", f"| stage | steps | final {dev_key.replace('_', ' ')} | restarts from checkpoint |",
                  "|---|---:|---:|---:|"]
        for stage, info in tr.items():
            acc = info.get("final", {}).get(dev_key)
            lines.append(f"| {stage} | {info.get('steps')} | {'' if acc is None else f'{acc:.2%}'} | "
                         f"{info.get('resumes', 0)} |")
        lines.append("")
    if r.get("tune"):
        tu = r["tune"]
        lines += ["## Hyperparameter search (Ray Tune)", "",
                  f"{tu.get('trials')} trials ({tu.get('completed', 0)} completed, {tu.get('stopped_early', 0)} "
                  f"stopped early, {tu.get('failed', 0)} failed; {tu.get('search')} search, scheduler "
                  f"{tu.get('scheduler')}); best {tu.get('metric', 'dev_accuracy').replace('_', ' ')} "
                  f"{tu.get('best_score', tu.get('best_accuracy', 0)):.2%} with "
                  f"`{json.dumps(tu.get('best_params'))}`, the config this student was trained with. "
                  f"Teacher forward passes avoided: {tu.get('teacher_forwards_avoided', 0):,} (every trial "
                  "read the same precomputed logits).", ""]
        if (tu.get("files") or {}).get("plot"):
            lines += ["Per trial: `tune/results.csv`, best: `tune/best.json`.", "",
                      f"![tune](tune/{Path(tu['files']['plot']).name})", ""]
    d = r["dataset"]
    lines += ["## Data", "", f"- train: `{d.get('train')}` ({d.get('train_rows')} rows)",
              f"- dev: `{d.get('dev')}` ({d.get('dev_rows')} rows)", f"- labels: {d.get('labels')}",
              f"- teacher logits: `{d.get('shard_dir')}`", ""]
    lines += ["## Timings (seconds)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["timings"].items()]
    lines += ["", "## Config", "", "```json", json.dumps(r["config"], indent=2), "```", ""]
    return "\n".join(lines)


def plot_curves(out: Path, histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Loss and dev-accuracy curves per stage; returns the PNG names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for stage, hist in histories.items():
        train = [h for h in hist if any(k.startswith("train_loss") for k in h)]
        dev_key = "dev_accuracy" if any("dev_accuracy" in h for h in hist) else "dev_f1"
        dev = [h for h in hist if dev_key in h]
        if not train and not dev:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for key in sorted({k for h in train for k in h if k.startswith("train_loss")}):
            axes[0].plot([h["step"] for h in train if key in h], [h[key] for h in train if key in h], label=key[6:])
        axes[0].set(title=f"{stage}: training loss", xlabel="step")
        axes[0].legend()
        axes[1].plot([h["step"] for h in dev], [h[dev_key] for h in dev], marker="o")
        axes[1].set(title=f"{stage}: {dev_key.replace('_', ' ')}", xlabel="step", ylim=(0, 1))
        fig.tight_layout()
        name = f"{stage}_curves.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(name)
    return written


def plot_tradeoff(out: Path, evals: dict[str, dict[str, Any]], trials: list[dict[str, Any]] | None = None) -> str:
    """Accuracy against throughput: teacher, student, int8 student (and Tune trials' accuracy)."""
    import matplotlib.pyplot as plt

    fig = tradeoff_figure(evals, trials)
    name = "accuracy_vs_throughput.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def tradeoff_figure(evals: dict[str, dict[str, Any]], trials: list[dict[str, Any]] | None = None) -> Figure:
    """The figure `plot_tradeoff` saves: every label inside the axes, the legend beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4))
    xs = [e["throughput"] for e in evals.values()]
    middle = (min(xs) + max(xs)) / 2
    score = "accuracy" if all("accuracy" in e for e in evals.values()) else "f1"  # QA: SQuAD F1
    for name, e in evals.items():
        ax.scatter(e["throughput"], e[score], s=60, label=name)
        # Each label on the inner side of its point, so the rightmost one stays inside the axes.
        inner_left = e["throughput"] > middle
        ax.annotate(name, (e["throughput"], e[score]), textcoords="offset points",
                    xytext=(-7 if inner_left else 7, 6), ha="right" if inner_left else "left", va="bottom")
    if trials and "student" in evals:
        accs = [tr[f"dev_{score}"] for tr in trials if tr.get(f"dev_{score}") is not None]
        ax.scatter([evals["student"]["throughput"]] * len(accs), accs, marker="x", alpha=0.5, label="Tune trials")
    ax.margins(x=0.12, y=0.15)  # room for the labels above the highest and outermost points
    ax.set(xlabel="throughput (examples/s)", ylabel=f"dev {score}", title=f"{score} vs speed")
    # Outside the axes: a legend inside covers whichever point sits in its corner.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    fig.tight_layout()
    return fig


def write_report(out: Path, report: dict[str, Any], histories: dict[str, list[dict[str, Any]]],
                 evals: dict[str, dict[str, Any]], trials: list[dict[str, Any]] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(out, histories)
    plots.append(plot_tradeoff(out, evals, trials))
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False, default=str))
    (out / "report.md").write_text(render_markdown(report, plots))
    return out / "report.json"
