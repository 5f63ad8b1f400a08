"""The augmenter (seeded, each method's effect, neighbours from the embedding matrix), row ids per
source, the precompute blocks, UNLABELLED in the loss, and the augment config's errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from distillray.config import AugmentConfig, ConfigError, DistillConfig, load_config
from distillray.data.augment import (
    ORIGINAL,
    Augmenter,
    NeighbourTable,
    UnlabelledText,
    augment_id,
    expected_ids,
    labelled_only,
    load_unlabelled,
    output_rows,
    pending_blocks,
    source_counts,
    source_table,
    trains_on_unlabelled,
    unlabelled_id,
)
from distillray.errors import DataError
from distillray.losses import UNLABELLED, LossWeights, ce_loss, distill_loss, kd_loss

TEXT = "the film is a charming and often affecting journey through a strange land"


def make(table: NeighbourTable | None = None, **kw) -> Augmenter:
    return Augmenter("unused", {"copies": 3, **kw}, mask_token="[MASK]", table=table)


def toy_table(top_k: int = 1) -> NeighbourTable:
    # cat ~ dog, car ~ truck; '##ing', '[CLS]', '1990' and ',' are not whole words
    vocab = {"[CLS]": 0, "##ing": 1, "cat": 2, "dog": 3, "car": 4, "truck": 5, "1990": 6, ",": 7}
    emb = np.zeros((8, 3), np.float32)
    emb[[0, 1, 6, 7]] = [[1, 1, 1], [1, 1, 0.9], [0.9, 1, 1], [1, 0.9, 1]]
    emb[2], emb[3] = [1, 0, 0], [0.9, 0.1, 0]
    emb[4], emb[5] = [0, 1, 0], [0, 0.9, 0.2]
    return NeighbourTable(emb, vocab, top_k)


# ---------------------------------------------------------------------------------------------
# the augmenter


def test_copies_are_a_function_of_seed_row_and_copy():
    a = make(methods=["mask", "dropout", "swap", "ngram"], p_mask=0.2, p_dropout=0.2, p_swap=0.2, p_ngram=0.5)
    again = make(methods=["mask", "dropout", "swap", "ngram"], p_mask=0.2, p_dropout=0.2, p_swap=0.2, p_ngram=0.5)
    copies = [a.augment_text(TEXT, 7, k) for k in range(8)]
    assert copies == [again.augment_text(TEXT, 7, k) for k in range(8)]
    assert len(set(copies)) == 8  # copies differ from each other
    assert [a.augment_text(TEXT, 8, k) for k in range(8)] != copies  # and from another row's
    other_seed = make(methods=["mask", "dropout", "swap", "ngram"], p_mask=0.2, p_dropout=0.2, p_swap=0.2,
                      p_ngram=0.5, seed=1)
    assert [other_seed.augment_text(TEXT, 7, k) for k in range(8)] != copies


def test_a_copy_does_not_depend_on_the_block_it_is_in():
    a = make(methods=["mask", "swap"], p_mask=0.3, p_swap=0.3)
    alone = a(pa.table({"id": [5], "text": [TEXT], "label": [1], "pending": [[ORIGINAL, 0, 1, 2]]}))
    block = a(pa.table({"id": [1, 5], "text": ["other words here", TEXT], "label": [0, 1],
                        "pending": [[0, 1], [2, 0, ORIGINAL, 1]]}))
    texts = dict(zip(block.column("id").to_pylist(), block.column("text").to_pylist()))
    for i, t in zip(alone.column("id").to_pylist(), alone.column("text").to_pylist()):
        assert texts[i] == t


def test_mask_replaces_words_with_the_mask_token():
    assert make(methods=["mask"], p_mask=1.0).augment_text("a b c", 0, 0) == "[MASK] [MASK] [MASK]"
    out = make(methods=["mask"], p_mask=0.3).augment_text(TEXT, 3, 0).split()
    assert len(out) == len(TEXT.split()) and 0 < out.count("[MASK]") < len(out)
    assert all(o in ("[MASK]", w) for o, w in zip(out, TEXT.split()))


def test_dropout_removes_words_and_keeps_the_order():
    out = make(methods=["dropout"], p_dropout=0.5).augment_text(TEXT, 1, 0).split()
    words = TEXT.split()
    assert 0 < len(out) < len(words)
    it = iter(words)
    assert all(w in it for w in out)  # a subsequence
    assert make(methods=["dropout"], p_dropout=1.0).augment_text(TEXT, 1, 0) in words  # never empty


def test_swap_exchanges_adjacent_words():
    assert make(methods=["swap"], p_swap=1.0).augment_text("a b c d e", 0, 0) == "b a d c e"
    out = make(methods=["swap"], p_swap=0.3).augment_text(TEXT, 2, 1).split()
    assert sorted(out) == sorted(TEXT.split()) and out != TEXT.split()


def test_ngram_keeps_one_contiguous_run_of_at_most_five_words():
    a = make(methods=["ngram"], p_ngram=1.0)
    for k in range(20):
        out = a.augment_text(TEXT, 4, k)
        assert 1 <= len(out.split()) <= 5 and out in TEXT
    assert make(methods=["ngram"], p_ngram=0.0 + 1e-9).augment_text(TEXT, 4, 0) == TEXT


def test_neighbours_come_from_the_embedding_matrix():
    t = toy_table()
    assert sorted(t.words) == ["car", "cat", "dog", "truck"]  # whole words only
    assert t.candidates("cat") == ["dog"] and t.candidates("truck") == ["car"]
    assert t.candidates("Cat") == ["dog"] and t.candidates("ing") == [] and t.candidates("1990") == []
    a = make(t, methods=["neighbour"], p_neighbour=1.0)
    assert a.augment_text("Cat and car , 1990", 0, 0) == "Dog and truck , 1990"  # others unchanged


def test_neighbour_table_of_a_real_model_is_the_cosine_top_k(tmp_path):
    from tiny import make_tiny_bert

    from distillray.models import load_classifier, load_tokenizer

    d = make_tiny_bert(tmp_path / "m", hidden=16, layers=1)
    table = NeighbourTable.from_model(str(d), top_k=3)
    emb = load_classifier(d).get_input_embeddings().weight.detach().double()
    vocab = load_tokenizer(d).get_vocab()
    assert "movie" in table.index and "##s" not in table.index and "[MASK]" not in table.index
    rows = torch.nn.functional.normalize(emb[[vocab[w] for w in table.words]], dim=1)
    for word in ("movie", "good", "bad"):
        sims = rows @ rows[table.index[word]]
        sims[table.index[word]] = -2
        want = [table.words[j] for j in sims.topk(3).indices.tolist()]
        assert table.candidates(word) == want
    before = table.candidates("film")
    table.prepare(["film", "great", "awful", "plot"])  # looked up alone or in a batch: the same
    fresh = NeighbourTable.from_model(str(d), top_k=3)
    fresh.prepare(["plot", "awful", "great", "film", "movie"])
    assert fresh.candidates("film") == before and fresh.candidates("plot") == table.candidates("plot")


def test_augmenter_rows_ids_labels_and_other_columns():
    a = make(methods=["mask"], p_mask=0.5)
    batch = pa.table({"id": [3, 9], "text": ["a b c d", "e f g h"], "label": [1, 0],
                      "pending": pa.array([[ORIGINAL, 0, 2], [1]], pa.list_(pa.int16())), "extra": ["x", "y"]})
    out = a(batch)
    assert out.column_names == ["id", "text", "label", "extra"]
    assert out.column("id").to_pylist() == [3, augment_id(3, 0), augment_id(3, 2), augment_id(9, 1)]
    assert out.column("label").to_pylist() == [1, UNLABELLED, UNLABELLED, UNLABELLED]
    assert out.column("text").to_pylist()[0] == "a b c d"
    assert out.column("extra").to_pylist() == ["x", "x", "x", "y"]


# ---------------------------------------------------------------------------------------------
# ids, sources, blocks


def test_ids_keep_the_sources_apart():
    train = np.arange(100, dtype=np.int64)
    extra = [UnlabelledText("u.tsv", np.array([0, 2, 5]), ["p", "q", "r"]),
             UnlabelledText("v.tsv", np.array([0]), ["s"])]
    ids = expected_ids(train, extra, copies=3)
    assert len(ids) == len(set(ids.tolist())) == 100 + 300 + 4
    assert source_counts(ids) == {"train": 100, "augment": 300, "unlabelled": 4}
    assert augment_id(99, 2) in ids and unlabelled_id(1, 0) in ids and unlabelled_id(0, 5) in ids
    assert augment_id(1, 0) != augment_id(0, 255)


def test_source_table_lists_only_what_is_missing_and_blocks_fit_shards():
    train = pa.table({"id": pa.array(np.arange(10), pa.int64()), "text": [f"t {i}" for i in range(10)],
                      "label": pa.array([0, 1] * 5, pa.int64())})
    extra = [UnlabelledText("u.tsv", np.array([0, 1, 2]), ["x", "y", "z"])]
    done = np.array([0, 1, augment_id(2, 1), unlabelled_id(0, 1)])
    table = source_table(train, extra, 2, done)
    pending = dict(zip(table.column("id").to_pylist(), table.column("pending").to_pylist()))
    assert pending[0] == [0, 1] and pending[1] == [0, 1]  # the rows are done, their copies are not
    assert output_rows(table) == 10 * 3 + 3 - len(done)
    assert pending[2] == [ORIGINAL, 0] and pending[3] == [ORIGINAL, 0, 1]
    assert unlabelled_id(0, 1) not in pending and pending[unlabelled_id(0, 2)] == [ORIGINAL]
    assert set(table.column("label").to_pylist()[-2:]) == {UNLABELLED}
    blocks = pending_blocks(table, shard_rows=7, min_blocks=2)
    assert all(output_rows(b) <= 7 for b in blocks) and sum(output_rows(b) for b in blocks) == output_rows(table)
    assert len(pending_blocks(table, shard_rows=1000, min_blocks=3)) >= 3
    assert pending_blocks(source_table(train, [], 0, np.arange(10)), 7, 1) == []


def test_source_table_keeps_rows_whose_copies_are_missing():
    train = pa.table({"id": pa.array([0, 1], pa.int64()), "text": ["a", "b"], "label": pa.array([0, 1], pa.int64())})
    table = source_table(train, [], 2, np.array([0, 1, augment_id(0, 0)]))
    assert table.column("pending").to_pylist() == [[1], [0, 1]]


def test_unlabelled_files_read_text_only(tmp_path):
    (tmp_path / "u.tsv").write_text("text\nfirst one\n\n   \nsecond one\n")
    (tmp_path / "v.txt").write_text("alpha beta\ngamma\n")
    cfg = load_config(None, [f"augment.unlabelled=[{tmp_path / 'u.tsv'}]", "data.text_column=1", "data.label_column=0"])
    (u,) = load_unlabelled(cfg)
    assert u.texts == ["first one", "second one"] and u.ids.tolist() == [0, 1]
    cfg = load_config(None, [f"augment.unlabelled=[{tmp_path / 'v.txt'}]", "augment.unlabelled_column=0"])
    assert load_unlabelled(cfg)[0].texts == ["alpha beta", "gamma"]


def test_unlabelled_file_errors_name_the_augment_key(tmp_path):
    with pytest.raises(DataError, match=r"augment.unlabelled: .*nope.tsv: no such file"):
        load_unlabelled(load_config(None, [f"augment.unlabelled=[{tmp_path / 'nope.tsv'}]"]))
    (tmp_path / "u.tsv").write_text("sentence\nhello\n")
    with pytest.raises(DataError, match=r"no column .text. .*e.g. augment.unlabelled_column=sentence"):
        load_unlabelled(load_config(None, [f"augment.unlabelled=[{tmp_path / 'u.tsv'}]"]))


# ---------------------------------------------------------------------------------------------
# the loss: CE skips UNLABELLED rows, KD does not


def test_ce_skips_unlabelled_rows():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, UNLABELLED, 2, UNLABELLED, 1, 1])
    keep = labels != UNLABELLED
    assert torch.allclose(ce_loss(logits, labels), torch.nn.functional.cross_entropy(logits[keep], labels[keep]))
    ce_loss(logits, labels).backward()
    assert logits.grad[~keep].abs().sum() == 0 and logits.grad[keep].abs().sum() > 0
    none = ce_loss(logits, torch.full((6,), UNLABELLED))
    assert none.item() == 0.0 and torch.isfinite(none)


def test_kd_still_trains_on_unlabelled_rows():
    torch.manual_seed(1)
    logits = torch.randn(4, 2, requires_grad=True)
    teacher = torch.randn(4, 2)
    labels = torch.tensor([1, UNLABELLED, UNLABELLED, 0])
    w = LossWeights(temperature=2.0, alpha_kd=0.5, alpha_ce=0.5)
    total, terms = distill_loss(logits, labels, w, teacher_logits=teacher)
    assert torch.allclose(terms["loss_kd"], kd_loss(logits, teacher, 2.0))  # every row
    total.backward()
    assert (logits.grad[1:3].abs().sum(dim=1) > 0).all()  # the unlabelled rows get KD gradients
    keep = labels != UNLABELLED
    assert torch.allclose(terms["loss_ce"], torch.nn.functional.cross_entropy(logits[keep], labels[keep]))


def test_a_hard_label_run_does_not_train_on_unlabelled_rows():
    assert trains_on_unlabelled(DistillConfig()) and trains_on_unlabelled(DistillConfig(alpha_kd=0, alpha_mse=0.5))
    assert not trains_on_unlabelled(DistillConfig(alpha_kd=0, alpha_ce=1))
    plain = {"rows": 40, "sources": {"train": 40, "augment": 0, "unlabelled": 0}}
    ds = object()  # no augmented rows: the dataset is not touched
    assert labelled_only(ds, plain, DistillConfig(alpha_kd=0, alpha_ce=1)) == (ds, 40)
    mixed = {"rows": 120, "sources": {"train": 40, "augment": 80, "unlabelled": 0}}
    assert labelled_only(ds, mixed, DistillConfig()) == (ds, 120)


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("overrides, message", [
    (["augment.copies=2", "augment.methods=[]"], "augment.copies>0 but augment.methods=[] is empty"),
    (["augment.methods=[mask,mask]"], "has repeats"),
    (["augment.methods=[mask,swap]", "augment.p_swap=0"], "has swap but augment.p_swap=0"),
    (["augment.methods=[mask,neighbour]", "augment.p_mask=0.6", "augment.p_neighbour=0.6"], "is 1.2, above 1"),
    (["augment.copies=256"], "augment.copies=256 is invalid"),
    (["augment.methods=[synonym]"], "augment.methods.0=\"synonym\" is invalid"),
    (["augment.p_mask=1.5"], "augment.p_mask=1.5 is invalid"),
    (["augment.copise=2"], "did you mean augment.copies?"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_defaults_are_off_and_paths_resolve(tmp_path):
    assert AugmentConfig().copies == 0 and AugmentConfig().unlabelled == []
    cfg = load_config(None, ["augment.copies=10", "augment.unlabelled=[extra.tsv]"], base_dir=tmp_path)
    assert cfg.augment.unlabelled == [str(tmp_path / "extra.tsv")]
