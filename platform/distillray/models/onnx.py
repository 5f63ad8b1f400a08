"""ONNX export and int8 quantisation of exported model dirs (classifiers of single texts or of
sentence pairs, and extractive QA models), for ONNX Runtime on CPU and edge.

The files go to `<model dir>/onnx/`, the layout Hugging Face Hub repos use for ONNX weights, so
the dir root stays a plain HF model dir that `from_pretrained` loads unchanged:

    onnx/model.onnx               fp32; inputs input_ids, attention_mask (batch, sequence); output logits
    onnx/model_int8_dynamic.onnx  int8 weights; activations quantised per batch at run time
    onnx/model_int8_static.onnx   int8 weights and activations; ranges calibrated on training rows

`token_type_ids` is not an input of a single-text classifier: it uses segment 0 throughout, which
BERT fills in itself (`inference.encode` never sends it to the torch model either). A sentence-pair
classifier takes it as a third input (segment 1 is the second text); a QA model (architecture
`*ForQuestionAnswering`) too (segment 1 is the context), and outputs `start_logits` and
`end_logits` (batch, sequence) instead of `logits`.

Export goes through `torch.onnx.export(dynamo=True)`, the torch.export-based exporter: torch
2.13's default and supported path (the TorchScript exporter, dynamo=False, is deprecated).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from distillray.errors import ModelError
from distillray.inference import forward_sorted, pad
from distillray.models.hf import load_classifier, load_tokenizer, model_config, resolve_model_dir
from distillray.tasks.classification import model_task, tokenize
from distillray.tasks.qa import QAWindows, is_qa_model, load_qa_model, tokenize_windows
from distillray.tasks.qa_decode import decode_windows, window_logits

logger = logging.getLogger(__name__)

VARIANTS = {"fp32": "model.onnx", "int8-dynamic": "model_int8_dynamic.onnx",
            "int8-static": "model_int8_static.onnx"}
PARITY_TOL = 1e-4  # largest |logit difference| allowed between torch and ONNX Runtime, fp32
INPUTS = ("input_ids", "attention_mask")
PAIR_INPUTS = (*INPUTS, "token_type_ids")  # sentence-pair classifiers and QA models
SPAN_OUTPUTS = ("start_logits", "end_logits")  # QA models


def export_kind(model_dir: str | Path) -> str:
    """What the export of a model dir looks like: single (a classifier of single texts), pair (of
    sentence pairs: token_type_ids input) or qa (a span head: token_type_ids in, start and end
    logits out)."""
    return "qa" if is_qa_model(model_dir) else model_task(model_config(model_dir))


def onnx_path(model_dir: str | Path, variant: str = "fp32") -> Path:
    """Where `variant` (a key of VARIANTS) of a model dir's ONNX export lives."""
    if variant not in VARIANTS:
        raise ModelError(f"ONNX variant {variant!r} is unknown; fix: use one of {sorted(VARIANTS)}")
    return resolve_model_dir(str(model_dir)) / "onnx" / VARIANTS[variant]


class _Logits(torch.nn.Module):
    """(input_ids, attention_mask) -> logits: the graph ONNX Runtime will run."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (batch, num_labels)


class _PairLogits(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> logits: a sentence-pair classifier."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits  # (batch, num_labels)


class _SpanLogits(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> (start_logits, end_logits): a QA model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.start_logits, out.end_logits  # each (batch, sequence)


def export_onnx(model_dir: str | Path, opset: int | None = None, fuse: bool = True) -> Path:
    """Write `<model_dir>/onnx/model.onnx` (fp32, dynamic batch and sequence axes); returns its path.
    The inputs and outputs follow `export_kind`: see the module docstring. `fuse`: rewrite the graph
    with ONNX Runtime's fused transformer kernels (`fuse_for_ort`); without it the graph holds
    standard ONNX operators only, for runtimes other than ONNX Runtime."""
    kind = export_kind(model_dir)
    model = (load_qa_model(model_dir) if kind == "qa" else load_classifier(model_dir)).eval()
    out = onnx_path(model_dir)
    out.parent.mkdir(exist_ok=True)
    # torch.export specialises axes of size 0 or 1, so the example has batch 2 and sequence 8
    ids = torch.full((2, 8), 1000, dtype=torch.long)
    mask = torch.ones_like(ids)
    if kind == "single":
        module, args, inputs, outputs = _Logits(model), (ids, mask), INPUTS, ["logits"]
    else:  # segment 0 then 1, as a pair or a (question, context) window
        types = torch.tensor([[0] * 4 + [1] * 4] * 2, dtype=torch.long)
        module = _SpanLogits(model) if kind == "qa" else _PairLogits(model)
        args, inputs = (ids, mask, types), PAIR_INPUTS
        outputs = list(SPAN_OUTPUTS) if kind == "qa" else ["logits"]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings():  # "axis name batch will not be used": the input names still are
        warnings.filterwarnings("ignore", message=".*axis name", category=UserWarning)
        try:
            program = torch.onnx.export(module.eval(), args, input_names=list(inputs),
                                        output_names=outputs, opset_version=opset, dynamo=True,
                                        dynamic_shapes={name: {0: batch, 1: seq} for name in inputs},
                                        external_data=False, verbose=False)
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the fix is the same
            first = (str(e).strip().splitlines() or [""])[0]  # the exporter's reports run to pages
            raise ModelError(f"{model_dir}: torch.onnx.export failed ({type(e).__name__}: {first}); only "
                             "BERT-family sequence classifiers and QA models are tested") from e
        program.save(str(out), external_data=False)
    if fuse:
        fuse_for_ort(out)
    logger.info("exported %s (fused: %s)", out, fused_ops(out) or "none")
    return out


def fuse_for_ort(path: str | Path) -> None:
    """Rewrite an exported BERT graph in place with ONNX Runtime's fused CPU kernels (com.microsoft
    domain): Attention (one QKV projection, mask and softmax), SkipLayerNormalization (residual add
    plus LayerNorm) and BiasGelu, with onnxscript's `ort_fusions.optimize_for_ort`, the rewriter
    written for torch.onnx's dynamo graphs (onnxruntime.transformers.optimizer finds no Attention
    in them). ORT's session-level optimisation does not make these fusions itself."""
    from onnxscript import ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.load(str(path)))
    ir.save(model, str(path))


def fused_ops(path: str | Path) -> dict[str, int]:
    """How many nodes of each ONNX Runtime contrib op type (com.microsoft domain) a graph holds."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def onnx_session(path: str | Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session over a file or a model's bytes: `threads` intra-op threads
    (default: ORT's, one per core), all graph optimisations, operators run one after another (a
    BERT graph is a chain). Idle threads sleep instead of spinning: on a shared node (or beside
    torch, timed in alternation) a spinning pool burns the cores the next call needs."""
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise ModelError(f"{path}: no ONNX model there; fix: export it first "
                         "(python jobs/export_onnx.py --model <model dir>)")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_param_count(path: str | Path) -> int:
    """Parameters in an export: the elements of its initializers (weights only, no data read)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer)


def sorted_batches(seqs: list, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of each batch, formed over length-sorted rows (as `inference.forward_sorted`)."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for start in range(0, len(seqs), batch_size):
        yield order[start:start + batch_size]


def _feed(seqs: list, pad_id: int, types: list | None = None) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs for rows of token ids (and their token_type_ids: sentence pairs)."""
    ids, mask = pad(seqs, pad_id)
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if types is not None:
        feed["token_type_ids"] = pad(types, 0)[0].numpy()
    return feed


def onnx_logits(session: ort.InferenceSession, seqs: list, batch_size: int, pad_id: int,
                types: list | None = None) -> np.ndarray:
    """Logits (rows, num_labels) float32 in input order, batches padded to their longest row.
    `types`: token_type_ids per row, for a sentence-pair export."""
    logits: np.ndarray | None = None
    for idx in sorted_batches(seqs, batch_size):
        feed = _feed([seqs[i] for i in idx], pad_id, None if types is None else [types[i] for i in idx])
        out = session.run(["logits"], feed)[0]
        if logits is None:
            logits = np.empty((len(seqs), out.shape[1]), dtype=np.float32)
        logits[idx] = out
    return logits if logits is not None else np.empty((0, 0), dtype=np.float32)


def max_logit_diff(model_dir: str | Path, texts: list, variant: str = "fp32", max_length: int = 128,
                   batch_size: int = 32) -> float:
    """The largest |logit difference| between the torch model and its ONNX export on `texts`
    (strings, or (text, text_pair) tuples for a sentence-pair model)."""
    tok = load_tokenizer(model_dir)
    seqs, types = tokenize(tok, texts, max_length)
    pad_id = tok.pad_token_id or 0
    ref, _ = forward_sorted(load_classifier(model_dir).eval(), seqs, batch_size, pad_id, types=types)
    got = onnx_logits(onnx_session(require_onnx(model_dir, variant)), seqs, batch_size, pad_id, types)
    return float(np.max(np.abs(ref - got)))


def check_parity(model_dir: str | Path, texts: list, max_length: int = 128, tol: float = PARITY_TOL) -> float:
    """`max_logit_diff` of the fp32 export, or a ModelError when it is above `tol`."""
    return _within_tol(model_dir, max_logit_diff(model_dir, texts, "fp32", max_length), len(texts), tol)


def _within_tol(model_dir: str | Path, diff: float, rows: int, tol: float) -> float:
    """`diff` (over `rows` checked rows), or a ModelError when it is above `tol`."""
    if not diff <= tol:  # also catches NaN
        raise ModelError(f"{onnx_path(model_dir)}: ONNX Runtime logits differ from torch's by up to {diff:.2e} "
                         f"on {rows} rows (allowed {tol:.0e}); fix: re-export with the pinned torch and "
                         "onnxruntime, or report the model type")
    return diff


def quantize_onnx_dynamic(model_dir: str | Path) -> Path:
    """int8 weights for every MatMul/Gemm with a constant weight; activations quantised per batch
    at run time (no calibration). Per-channel weight scales: on the SST-2 demo student they kept
    98.8 % of 500 train rows on the fp32 class, per-tensor 98.4 %. The fused Attention op keeps
    fp32: its int8 form (QAttention, 7-bit weights) kept 98.4 % of SST-2 dev on the fp32 class,
    fp32 Attention 99.5 %. Writes onnx/model_int8_dynamic.onnx; returns its path."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    src, out = require_onnx(model_dir), onnx_path(model_dir, "int8-dynamic")
    ops = [op for op in IntegerOpsRegistry if op != "Attention"]
    with _quiet_root_logger():
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=ops)
    return out


def quantize_onnx_static(model_dir: str | Path, seqs: list, pad_id: int, batch_size: int = 16,
                         per_channel: bool = True, types: list | None = None,
                         feeds: list[dict[str, np.ndarray]] | None = None) -> Path:
    """int8 weights and activations, activation ranges (min/max, averaged over the calibration
    batches) calibrated by running the fp32 model on `seqs` (token ids of a few hundred training
    rows). QDQ format, which ONNX Runtime fuses into integer kernels. The FFN output MatMuls,
    whose input is GELU's long-tailed output, stay fp32 (`gelu_matmuls`): of ORT's documented
    accuracy knobs (per_channel, reduce_range, excluded nodes, calibration method), only excluding
    those and averaging the ranges kept int8's argmax on fp32's for >= 99 % of rows on the SST-2
    demo student. Writes onnx/model_int8_static.onnx; returns its path. `types`: token_type_ids of
    sentence pairs; `feeds`: ready-made input batches instead of `seqs` (QA windows)."""
    import onnx

    src, out = require_onnx(model_dir), onnx_path(model_dir, "int8-static")
    if not seqs and not feeds:
        raise ModelError("static quantisation needs calibration rows; fix: pass a few hundred training texts")
    reader = CalibrationRows(seqs, pad_id, batch_size, types) if feeds is None else _Feeds(feeds)
    keep_fp32 = gelu_matmuls(onnx.load(str(src), load_external_data=False).graph)
    with _quiet_root_logger():
        quantize_static(str(src), str(out), reader,
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=keep_fp32,
                        extra_options={"CalibMovingAverage": True})
    return out


def gelu_matmuls(graph: Any) -> list[str]:
    """Names of the MatMul nodes fed by a Gelu node, fused or not (BERT's FFN output projections)."""
    producer = {o: n.op_type for n in graph.node for o in n.output}
    gelu = ("Gelu", "FastGelu", "BiasGelu")
    return [n.name for n in graph.node if n.op_type == "MatMul" and producer.get(n.input[0]) in gelu]


class _Feeds(CalibrationDataReader):
    """Feeds ready-made input batches to quantize_static."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._batches = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class CalibrationRows(_Feeds):
    """Feeds calibration batches (length-sorted, padded to their longest row) to quantize_static;
    with `types`, their token_type_ids too (sentence pairs)."""

    def __init__(self, seqs: list, pad_id: int, batch_size: int = 16, types: list | None = None):
        super().__init__([_feed([seqs[i] for i in idx], pad_id, None if types is None else [types[i] for i in idx])
                          for idx in sorted_batches(seqs, batch_size)])


def argmax_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose predicted class (argmax) is the reference's."""
    return float(np.mean(logits.argmax(-1) == reference.argmax(-1)))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs a line per tensor to the root logger; keep its warnings only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def require_onnx(model_dir: str | Path, variant: str = "fp32") -> Path:
    """The path of an existing export of `variant`, or a ModelError that says how to make it."""
    path = onnx_path(model_dir, variant)
    if not path.is_file():
        raise ModelError(f"{path}: no ONNX export ({variant}) there; fix: export it first "
                         f"(python jobs/export_onnx.py --model {model_dir})")
    return path


def export_variants(model_dir: str | Path, texts: list, calibration_texts: list | None = None,
                    max_length: int = 128, tol: float = PARITY_TOL, fuse: bool = True) -> dict[str, Any]:
    """Export fp32 and check it against torch on `texts` (a ModelError above `tol`); with
    `calibration_texts`, also write both int8 variants (static calibrated on those rows) and
    measure on `texts` how often each predicts the fp32 class. Returns the figures and paths.
    A sentence-pair model takes (text, text_pair) tuples; a QA model: `export_qa_variants`.
    `fuse`: as `export_onnx`; int8 is quantised from the graph fp32 runs."""
    out: dict[str, Any] = {"fp32": _exported(model_dir, fuse)}
    out["fp32"]["max_abs_logit_diff_vs_torch"] = check_parity(model_dir, texts, max_length, tol)
    if calibration_texts is None:
        return out
    tok = load_tokenizer(model_dir)
    pad_id = tok.pad_token_id or 0
    quantize_onnx_dynamic(model_dir)
    cal_seqs, cal_types = tokenize(tok, calibration_texts, max_length)
    quantize_onnx_static(model_dir, cal_seqs, pad_id, types=cal_types)
    seqs, types = tokenize(tok, texts, max_length)
    ref = onnx_logits(onnx_session(onnx_path(model_dir)), seqs, 64, pad_id, types)
    for variant in ("int8-dynamic", "int8-static"):
        path = onnx_path(model_dir, variant)
        logits = onnx_logits(onnx_session(path), seqs, 64, pad_id, types)
        out[variant] = {"path": str(path), "argmax_agreement_vs_fp32": argmax_agreement(logits, ref),
                        "max_abs_logit_diff_vs_fp32": float(np.max(np.abs(logits - ref))),
                        "calibration_rows": len(calibration_texts) if variant == "int8-static" else 0}
    return out


def _exported(model_dir: str | Path, fuse: bool) -> dict[str, Any]:
    """`export_onnx`, and the fused op types of the graph it wrote."""
    path = export_onnx(model_dir, fuse=fuse)
    return {"path": str(path), "fused_ops": fused_ops(path)}


# --- extractive QA: windows in, start and end logits out ----------------------------------------

def _window_feed(windows: QAWindows, idx: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs for windows `idx`, cut to their longest real window (`QAWindows.batch`)."""
    batch = windows.batch(idx)
    ids = batch["input_ids"].numpy()
    types = batch["token_type_ids"].numpy() if "token_type_ids" in batch else np.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": batch["attention_mask"].numpy(), "token_type_ids": types}


def onnx_window_logits(session: ort.InferenceSession, windows: QAWindows,
                       batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`qa_decode.window_logits` through a QA export: start and end logits (windows, max_length)
    float32, -inf past each batch's longest window."""
    n, width = windows.input_ids.shape
    starts = np.full((n, width), -np.inf, dtype=np.float32)
    ends = np.full((n, width), -np.inf, dtype=np.float32)
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(n, lo + batch_size))
        s, e = session.run(list(SPAN_OUTPUTS), _window_feed(windows, idx))
        starts[idx, : s.shape[1]], ends[idx, : e.shape[1]] = s, e
    return starts, ends


def _max_finite_diff(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """The largest |difference| between two (starts, ends) over the positions both computed."""
    both = [np.isfinite(x) & np.isfinite(y) for x, y in zip(a, b)]
    return max(float(np.max(np.abs(x[m] - y[m]), initial=0.0)) for x, y, m in zip(a, b, both))


def qa_windows(model_dir: str | Path, questions: list[str], contexts: list[str], max_length: int = 384,
               doc_stride: int = 128) -> QAWindows:
    """The windows a QA model dir reads for (question, context) pairs (`tasks.qa.tokenize_windows`)."""
    return tokenize_windows(load_tokenizer(model_dir), questions, contexts, max_length=max_length,
                            doc_stride=doc_stride)


def qa_max_logit_diff(model_dir: str | Path, questions: list[str], contexts: list[str], variant: str = "fp32",
                      max_length: int = 384, doc_stride: int = 128, batch_size: int = 32) -> float:
    """The largest |start or end logit difference| between a QA model and its ONNX export over
    every window of the (question, context) pairs."""
    windows = qa_windows(model_dir, questions, contexts, max_length, doc_stride)
    ref = window_logits(load_qa_model(model_dir).eval(), windows, batch_size)
    got = onnx_window_logits(onnx_session(require_onnx(model_dir, variant)), windows, batch_size)
    return _max_finite_diff(ref, got)


def span_agreement(answers: list[dict], reference: list[dict]) -> float:
    """Share of questions whose decoded answer has the reference's character span."""
    same = [(a["start"], a["end"]) == (r["start"], r["end"]) for a, r in zip(answers, reference, strict=True)]
    return float(np.mean(same)) if same else 0.0


def export_qa_variants(model_dir: str | Path, questions: list[str], contexts: list[str],
                       calibration: tuple[list[str], list[str]] | None = None, max_length: int = 384,
                       doc_stride: int = 128, max_answer_length: int = 30, tol: float = PARITY_TOL,
                       fuse: bool = True) -> dict[str, Any]:
    """`export_variants` for a QA model: export fp32 and check its start and end logits against
    torch over every window of the (question, context) pairs (a ModelError above `tol`); with
    `calibration` (questions, contexts), also write both int8 variants (static calibrated on
    those windows) and measure how often each decodes the fp32 answer span."""
    if not is_qa_model(model_dir):
        raise ModelError(f"{model_dir}: not a question-answering model (its architectures do not end in "
                         "ForQuestionAnswering); fix: use export_variants for classifiers")
    out: dict[str, Any] = {"fp32": _exported(model_dir, fuse)}
    windows = qa_windows(model_dir, questions, contexts, max_length, doc_stride)
    ref = onnx_window_logits(onnx_session(onnx_path(model_dir)), windows)
    diff = _max_finite_diff(window_logits(load_qa_model(model_dir).eval(), windows), ref)
    out["fp32"]["max_abs_logit_diff_vs_torch"] = _within_tol(model_dir, diff, len(windows), tol)
    out["fp32"]["windows"] = len(windows)
    if calibration is None:
        return out
    cal = qa_windows(model_dir, *calibration, max_length, doc_stride)
    quantize_onnx_dynamic(model_dir)
    quantize_onnx_static(model_dir, [], 0, feeds=[_window_feed(cal, np.arange(lo, min(len(cal), lo + 16)))
                                                  for lo in range(0, len(cal), 16)])
    ref_answers = decode_windows(*ref, windows, contexts, max_answer_length=max_answer_length)
    for variant in ("int8-dynamic", "int8-static"):
        path = onnx_path(model_dir, variant)
        got = onnx_window_logits(onnx_session(path), windows)
        answers = decode_windows(*got, windows, contexts, max_answer_length=max_answer_length)
        out[variant] = {"path": str(path), "answer_agreement_vs_fp32": span_agreement(answers, ref_answers),
                        "max_abs_logit_diff_vs_fp32": _max_finite_diff(got, ref),
                        "calibration_rows": len(calibration[0]) if variant == "int8-static" else 0}
    return out
