"""The accuracy-vs-throughput plot: every point's label inside the axes (the rightmost one was cut
off at the figure's edge), and the legend beside the axes, over no point."""

from __future__ import annotations

import pytest

from distillray.report import plot_tradeoff, tradeoff_figure

DEMO = {"teacher": {"throughput": 212.0, "accuracy": 0.8005},
        "student": {"throughput": 415.0, "accuracy": 0.7867},
        "student_int8": {"throughput": 603.0, "accuracy": 0.7810}}
CASES = {
    "demo": (DEMO, None),
    "tune trials": (DEMO, [{"dev_accuracy": a} for a in (0.70, 0.75, 0.78, None)]),
    "int8 best and fastest": ({**DEMO, "student_int8": {"throughput": 900.0, "accuracy": 0.83}}, None),
    "two models": ({k: DEMO[k] for k in ("teacher", "student")}, None),
    "one model": ({"student": DEMO["student"]}, None),
}


@pytest.mark.parametrize("case", CASES)
def test_labels_inside_and_legend_beside_the_axes(case):
    import matplotlib.pyplot as plt

    evals, trials = CASES[case]
    fig = tradeoff_figure(evals, trials)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        axes_box = ax.get_window_extent(renderer)
        labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
        assert set(labels) == set(evals)
        for name, box in labels.items():
            assert (axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0
                    and box.y1 <= axes_box.y1), f"{name}'s label {box} leaves the axes {axes_box}"
        legend_box = ax.get_legend().get_window_extent(renderer)
        assert legend_box.x0 >= axes_box.x1, "the legend overlaps the axes"
        assert legend_box.x1 <= fig.bbox.x1 and legend_box.y0 >= fig.bbox.y0, "the legend leaves the figure"
    finally:
        plt.close(fig)


def test_plot_tradeoff_writes_the_png(tmp_path):
    assert plot_tradeoff(tmp_path, DEMO) == "accuracy_vs_throughput.png"
    assert (tmp_path / "accuracy_vs_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
