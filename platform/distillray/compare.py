"""Distillation beside pruning and quantisation: every variant of a teacher and its student
(pruned, int8 in torch and in ONNX Runtime, ONNX fp32) on the same dev rows, timed side by side
(`evaluation.evaluate_dirs`), with one table, an accuracy-throughput Pareto plot, and the best
variant under a latency and a size budget (jobs/compare.py assembles it).

Pareto front as in multi-objective model selection (e.g. Cai et al. 2020, Once-for-All): a variant
stays on it when no other one is at least as accurate and at least as fast, and better in one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# each model dir's forms: (torch int8 dynamic?, ONNX variant or None)
FORMS: dict[str, tuple[bool, str | None]] = {
    "torch fp32": (False, None), "torch int8": (True, None), "ORT fp32": (False, "fp32"),
    "ORT int8 dynamic": (False, "int8-dynamic"), "ORT int8 static": (False, "int8-static")}


def variant_plan(models: dict[str, str], forms: dict[str, list[str]]) -> tuple[dict[str, str], tuple[str, ...], dict[str, str]]:
    """`evaluate_dirs`'s arguments for every (model, form): `"<model> <form>" -> dir`, the names
    loaded with torch int8, and the names run in ONNX Runtime with their ONNX variant."""
    dirs, quantized, onnx = {}, [], {}
    for model, model_dir in models.items():
        for form in forms[model]:
            name = f"{model} {form}"
            dirs[name] = model_dir
            int8, variant = FORMS[form]
            if int8:
                quantized.append(name)
            if variant:
                onnx[name] = variant
    return dirs, tuple(quantized), onnx


def pareto_front(evals: dict[str, dict[str, Any]], x: str = "throughput", y: str = "accuracy") -> list[str]:
    """Names of the variants no other variant dominates (>= on both `x` and `y`, > on one), by `x`."""
    def dominated(a: dict[str, Any]) -> bool:
        return any(b[x] >= a[x] and b[y] >= a[y] and (b[x] > a[x] or b[y] > a[y]) for b in evals.values())

    return sorted((n for n, e in evals.items() if not dominated(e)), key=lambda n: evals[n][x])


def best_under(evals: dict[str, dict[str, Any]], latency_budget_ms: float | None = None,
               size_budget_mb: float | None = None) -> str | None:
    """The most accurate variant whose batch-1 latency (ms) and weight bytes fit the budgets given
    (ties: the higher throughput); None when none fits."""
    fits = [n for n, e in evals.items()
            if (latency_budget_ms is None or e["latency_ms"] <= latency_budget_ms)
            and (size_budget_mb is None or e["size_bytes"] <= size_budget_mb * 1e6)]
    return max(fits, key=lambda n: (evals[n]["accuracy"], evals[n]["throughput"]), default=None)


def choices(evals: dict[str, dict[str, Any]], latency_budget_ms: float | None,
            size_budget_mb: float | None) -> dict[str, Any]:
    """The budgets the user gave, and the best variant under each (and under both)."""
    out: dict[str, Any] = {"latency_budget_ms": latency_budget_ms, "size_budget_mb": size_budget_mb}
    if latency_budget_ms is not None:
        out["best_under_latency"] = best_under(evals, latency_budget_ms=latency_budget_ms)
    if size_budget_mb is not None:
        out["best_under_size"] = best_under(evals, size_budget_mb=size_budget_mb)
    if latency_budget_ms is not None and size_budget_mb is not None:
        out["best_under_both"] = best_under(evals, latency_budget_ms, size_budget_mb)
    return out


def render_markdown(evals: dict[str, dict[str, Any]], reference: str, front: list[str], chosen: dict[str, Any],
                    plot: str | None, notes: list[str]) -> str:
    """compare.md: one table (accuracy, bytes, batch-1 latency, batch-64 throughput, each against
    `reference`), the Pareto front, the choices under the budgets, and the plot."""
    ref = evals[reference]
    lines = ["# distillray comparison: distillation, pruning, quantisation, ONNX Runtime", "",
             f"{ref['rows']} dev rows, every variant timed side by side in alternating rounds "
             f"(batch-64 throughput: the median round). Points are against `{reference}`; * marks the "
             "Pareto front (accuracy against batch-64 throughput).", "",
             "| variant | backend | accuracy | vs ref (points) | McNemar p | params | MB | latency ms (b1) "
             "| ex/s (b64) | b64 vs ref |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in evals.items():
        vs = e.get(f"vs_{reference}")
        p = "" if vs is None else (f"{vs['mcnemar_p']:.3f}" if vs["mcnemar_p"] >= 0.001 else "<0.001")
        lines.append(f"| {name}{' *' if name in front else ''} | {e['backend']} | {e['accuracy']:.2%} | "
                     f"{(e['accuracy'] - ref['accuracy']) * 100:+.2f} | {p} | {e['params'] / 1e6:.2f} M | "
                     f"{e['size_bytes'] / 1e6:.1f} | {e['latency_ms']:.2f} | {e['throughput']:.0f} | "
                     f"{e['throughput'] / ref['throughput']:.2f}x |")
    lines += ["", "Pareto front, slowest first: " + ", ".join(f"`{n}`" for n in front) + ".", ""]
    for key, what in (("best_under_latency", f"a batch-1 latency of {chosen.get('latency_budget_ms')} ms"),
                      ("best_under_size", f"{chosen.get('size_budget_mb')} MB of weights"),
                      ("best_under_both", "both budgets")):
        if key in chosen:
            n = chosen[key]
            lines.append(f"- Best under {what}: " + ("none fits" if n is None else
                         f"**{n}** ({evals[n]['accuracy']:.2%}, {evals[n]['latency_ms']:.2f} ms, "
                         f"{evals[n]['size_bytes'] / 1e6:.1f} MB, {evals[n]['throughput']:.0f} ex/s)"))
    if "latency_budget_ms" in chosen and chosen["latency_budget_ms"] is None and chosen["size_budget_mb"] is None:
        lines.append("- No budget given (compare.latency_budget_ms, compare.size_budget_mb): no variant chosen.")
    lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    if plot:
        lines += [f"![accuracy against throughput]({plot})", ""]
    return "\n".join(lines)


def pareto_plot(out: Path, evals: dict[str, dict[str, Any]], front: list[str]) -> str:
    """pareto.png: accuracy against batch-64 throughput, point area proportional to weight bytes,
    the front joined by a line. Returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    biggest = max(e["size_bytes"] for e in evals.values())
    fig, ax = plt.subplots(figsize=(9.5, 5.5))
    # colour: the model; marker: the form (torch or ONNX Runtime, fp32 or int8)
    markers = dict(zip(FORMS, "osD^v"))
    colours: dict[str, str] = {}
    for name, e in evals.items():
        form = next((f for f in FORMS if name.endswith(" " + f)), "")
        model = name[: len(name) - len(form)].strip()
        colour = colours.setdefault(model, f"C{len(colours) % 10}")
        ax.scatter(e["throughput"], e["accuracy"], s=20 + 480 * e["size_bytes"] / biggest, alpha=0.6, c=colour,
                   marker=markers.get(form, "o"), edgecolors="black" if name in front else "none",
                   label=f"{name} ({e['size_bytes'] / 1e6:.0f} MB)")
    ax.plot([evals[n]["throughput"] for n in front], [evals[n]["accuracy"] for n in front], "k--", lw=1,
            label="Pareto front")
    ax.margins(x=0.1, y=0.1)
    ax.set(xlabel="throughput (examples/s, batch 64)", ylabel="dev accuracy",
           title="accuracy against throughput (point area: weight bytes)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=7, markerscale=0.5)
    fig.tight_layout()
    name = "pareto.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def write_comparison(out: Path, evals: dict[str, dict[str, Any]], reference: str, latency_budget_ms: float | None,
                     size_budget_mb: float | None, notes: list[str] | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """compare.json, compare.md and pareto.png under `out`; returns what compare.json holds."""
    out.mkdir(parents=True, exist_ok=True)
    front = pareto_front(evals)
    chosen = choices(evals, latency_budget_ms, size_budget_mb)
    plot = pareto_plot(out, evals, front)
    result = {"reference": reference, "pareto_front": front, **chosen, "variants": evals, "notes": notes or [],
              **(extra or {})}
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "compare.md").write_text(render_markdown(evals, reference, front, chosen, plot, notes or []))
    logger.info("wrote %s", out / "compare.md")
    return result


def export_all(models: dict[str, str], onnx_models: list[str], parity_texts: list[str],
               calibration_texts: list[str], max_length: int) -> tuple[dict[str, list[str]], dict[str, Any], list[str]]:
    """Each model's forms: every form for those in `onnx_models` whose ONNX export and parity check
    pass (`models.onnx.export_variants`), the torch forms for the rest. Also returns the export
    figures (parity, int8 agreement) and a note per export that failed."""
    from distillray.errors import ModelError
    from distillray.models.onnx import export_variants

    forms = {m: ["torch fp32", "torch int8"] for m in models}
    exports, notes = {}, []
    for m in onnx_models:
        try:
            exports[m] = export_variants(models[m], parity_texts, calibration_texts, max_length)
        except ModelError as e:
            notes.append(f"{m}: no ONNX forms ({e})")
            logger.warning("%s: no ONNX forms: %s", m, e)
            continue
        forms[m] += ["ORT fp32", "ORT int8 dynamic", "ORT int8 static"]
    return forms, exports, notes


def evaluate_variants(models: dict[str, str], forms: dict[str, list[str]], texts: list[str], labels: Any,
                      label_names: list[str], max_length: int, reference: str) -> dict[str, dict[str, Any]]:
    """`evaluation.evaluate_dirs` over every (model, form): same dev rows, timed side by side,
    each compared with `reference` (McNemar)."""
    from distillray.evaluation import evaluate_dirs

    dirs, quantized, onnx = variant_plan(models, forms)
    return evaluate_dirs(dirs, texts, labels, label_names, quantized=quantized, max_length=max_length,
                         onnx=onnx, compare_to=reference)
