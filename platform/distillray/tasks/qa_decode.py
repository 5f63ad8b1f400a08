"""From start/end logits to answers: n-best span decoding over every window of a question, and
`answer_questions`, the question-answering call for a model dir.

Decoding follows Hugging Face's `postprocess_qa_predictions` (run_qa's utils_qa.py): per window,
the `n_best` highest start and end logits among the context tokens, pairs with end >= start and at
most `max_answer_length` tokens, ranked by start + end logit across all windows of the question,
mapped back to characters through the window's offsets. Transformers 5 removed
`pipeline("question-answering")`; `answer_questions` stands in for it and returns the same keys
(answer, score, start, end).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distillray.tasks.qa import QAWindows, tokenize_windows


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray, n_best: int = 20,
              max_answer_length: int = 30) -> tuple[float, int, int, float] | None:
    """The best span of one window: (start + end logit, start token, end token, probability), or
    None when the window has no context token (or max_answer_length < 1). The probability is p(start) * p(end) with each
    softmax taken over the window's context tokens, as the old pipeline's score.

    start_logits, end_logits: (seq,); offsets: (seq, 2), -1 outside the context.
    """
    seq = min(len(start_logits), len(end_logits), len(offsets))
    ctx = np.nonzero(offsets[:seq, 0] >= 0)[0]  # (context tokens,)
    if len(ctx) == 0:
        return None
    s_ctx = np.asarray(start_logits[ctx], dtype=np.float64)
    e_ctx = np.asarray(end_logits[ctx], dtype=np.float64)
    for k in (min(n_best, len(ctx)), len(ctx)):  # all context tokens if no top-k pair is valid
        si = np.argpartition(-s_ctx, k - 1)[:k]  # (k,) indexes into ctx
        ei = np.argpartition(-e_ctx, k - 1)[:k]
        pair = s_ctx[si][:, None] + e_ctx[ei][None, :]  # (k, k) start + end logit
        length = ctx[ei][None, :] - ctx[si][:, None] + 1  # tokens from start to end, inclusive
        pair = np.where((length >= 1) & (length <= max_answer_length), pair, -np.inf)
        a, b = np.unravel_index(int(np.argmax(pair)), pair.shape)
        if np.isfinite(pair[a, b]):
            break
    else:
        return None
    prob = float(np.exp(_log_softmax(s_ctx)[si[a]] + _log_softmax(e_ctx)[ei[b]]))
    return float(pair[a, b]), int(ctx[si[a]]), int(ctx[ei[b]]), prob


def decode_windows(start_logits: np.ndarray | torch.Tensor, end_logits: np.ndarray | torch.Tensor,
                   windows: QAWindows, contexts: Sequence[str], n_best: int = 20,
                   max_answer_length: int = 30) -> list[dict]:
    """The best answer of each example over all its windows: {"answer", "score", "start", "end"}
    with `contexts[i][start:end] == answer` (characters, end exclusive). An example with no
    possible span (an empty context) gets answer "" and score 0.

    start_logits, end_logits: (windows, seq), seq <= the windows' max_length.
    """
    start_logits = torch.as_tensor(start_logits).float().numpy()
    end_logits = torch.as_tensor(end_logits).float().numpy()
    best: list[tuple[float, int, int, int, float] | None] = [None] * len(contexts)
    for w in range(len(windows)):
        found = best_span(start_logits[w], end_logits[w], windows.offsets[w], n_best, max_answer_length)
        ex = int(windows.example_index[w])
        if found is not None and (best[ex] is None or found[0] > best[ex][0]):
            best[ex] = (found[0], w, found[1], found[2], found[3])
    answers = []
    for ex, b in enumerate(best):
        if b is None:
            answers.append({"answer": "", "score": 0.0, "start": 0, "end": 0})
            continue
        _, w, s, e, prob = b
        start, end = int(windows.offsets[w, s, 0]), int(windows.offsets[w, e, 1])
        answers.append({"answer": contexts[ex][start:end], "score": prob, "start": start, "end": end})
    return answers


@torch.inference_mode()
def window_logits(model: PreTrainedModel, windows: QAWindows, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The model's start and end logits for every window, each (windows, max_length) float32;
    positions past a batch's longest window hold -inf."""
    device = next(model.parameters()).device
    n, width = windows.input_ids.shape
    starts = np.full((n, width), -np.inf, dtype=np.float32)
    ends = np.full((n, width), -np.inf, dtype=np.float32)
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(n, lo + batch_size))
        batch = windows.batch(idx)
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model(**inputs)
        seq = out.start_logits.shape[1]
        starts[idx, :seq] = out.start_logits.float().cpu().numpy()
        ends[idx, :seq] = out.end_logits.float().cpu().numpy()
    return starts, ends


def answer_questions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     questions: str | Sequence[str], contexts: str | Sequence[str], max_length: int = 384,
                     doc_stride: int = 128, max_answer_length: int = 30, n_best: int = 20,
                     max_question_tokens: int = 64, batch_size: int = 32) -> dict | list[dict]:
    """Answer each question from its context: {"answer", "score", "start", "end"} per question
    (one dict for a single question string), the keys `pipeline("question-answering")` returned.
    Contexts longer than `max_length` tokens are read in windows overlapping by `doc_stride`."""
    was_training = model.training
    model.eval()
    try:
        return answer_with(lambda w, b: window_logits(model, w, b), tokenizer, questions, contexts, max_length,
                           doc_stride, max_answer_length, n_best, max_question_tokens, batch_size)
    finally:
        model.train(was_training)


def answer_with(logits: Callable[[QAWindows, int], tuple[np.ndarray, np.ndarray]],
                tokenizer: PreTrainedTokenizerBase, questions: str | Sequence[str], contexts: str | Sequence[str],
                max_length: int = 384, doc_stride: int = 128, max_answer_length: int = 30, n_best: int = 20,
                max_question_tokens: int = 64, batch_size: int = 32) -> dict | list[dict]:
    """`answer_questions` with any runtime: `logits(windows, batch_size)` gives the start and end
    logits of every window (`window_logits`, or `models.onnx.onnx_window_logits` with its session)."""
    single = isinstance(questions, str)
    if single != isinstance(contexts, str):
        raise ValueError("pass one question with one context, or a list of each")
    qs = [questions] if single else list(questions)
    cs = [contexts] if single else list(contexts)
    windows = tokenize_windows(tokenizer, qs, cs, max_length=max_length, doc_stride=doc_stride,
                               max_question_tokens=max_question_tokens)
    starts, ends = logits(windows, batch_size)
    answers = decode_windows(starts, ends, windows, cs, n_best=n_best, max_answer_length=max_answer_length)
    return answers[0] if single else answers
