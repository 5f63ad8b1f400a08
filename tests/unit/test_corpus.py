"""augment.corpus (data/corpus.py): the task-agnostic corpus is every dataset's train text
(pairs: both sentences; SQuAD: context sentences), deduplicated, never a dev row, and it joins
the unlabelled rows the teacher labels, under the shard key."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from conftest import shared_data
from qa_data import LONG_ANSWER, write_squad

from distillray.config import ConfigError, load_config
from distillray.data.augment import enabled, load_unlabelled, shard_meta
from distillray.data.corpus import build_corpus as build
from distillray.data.corpus import split_sentences
from distillray.data.text import TextDataset
from distillray.errors import DataError


def write_datasets(root):
    (root / "sst2").mkdir(parents=True)
    (root / "sst2" / "train.tsv").write_text("label\tsentence\n1\ta gorgeous film\n0\tdull\n1\ta gorgeous film\n")
    (root / "sst2" / "dev.tsv").write_text("label\tcontent\n1\tDEV ROW sst2\n")
    (root / "mrpc").mkdir()
    (root / "mrpc" / "train.tsv").write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe called it "the witness" twice.\tdull\n', encoding="utf-8")  # "dull": a duplicate of sst2's
    (root / "mrpc" / "dev.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t3\t4\tDEV ROW a\tDEV ROW b\n")
    write_squad(root / "squad", train_questions=3)  # its dev.json holds the same long context: read train only


def test_every_train_text_once_and_no_dev_row(tmp_path):
    write_datasets(tmp_path)
    corpus = build(tmp_path)
    assert corpus.texts[:4] == ["a gorgeous film", "dull", 'He called it "the witness" twice.', "The committee "
                                "met again in the spring and discussed the budget, the roads, the schools and the "
                                "new library at some length."]
    assert corpus.sources == {"sst2": 2, "mrpc": 1, "squad": len(corpus.texts) - 3}
    assert corpus.missing == [str(tmp_path / "rte" / "train.tsv")]
    assert f"The bridge was finally designed by {LONG_ANSWER} in 1921." in corpus.texts
    assert "In year 1900 the fair moved to Lisbon, where it stayed for 2 weeks." in corpus.texts
    assert len(set(corpus.texts)) == len(corpus.texts) and not any("DEV ROW" in t for t in corpus.texts)
    assert build(tmp_path, ["mrpc"]).texts == ['He called it "the witness" twice.', "dull"]


def test_augment_corpus_joins_the_unlabelled_rows_and_the_shard_key(tmp_path, caplog):
    write_datasets(tmp_path / "data")
    (tmp_path / "extra.tsv").write_text("text\nan extra line\n")
    cfg = load_config(None, [f"augment.corpus={tmp_path / 'data'}", f"augment.unlabelled=[{tmp_path / 'extra.tsv'}]"])
    assert enabled(cfg.augment)
    extra, corpus = load_unlabelled(cfg)
    assert extra.texts == ["an extra line"] and corpus.source == f"corpus:{tmp_path / 'data'}"
    assert corpus.texts == build(tmp_path / "data").texts and corpus.ids.tolist() == list(range(len(corpus.texts)))
    assert "rte/train.tsv not found: left out of the corpus" in caplog.text
    key = shard_meta(cfg.augment, [extra, corpus])
    (tmp_path / "data" / "sst2" / "train.tsv").write_text("label\tsentence\n1\ta changed film\n")
    assert shard_meta(cfg.augment, load_unlabelled(cfg)) != key  # a changed dataset: new shards
    with pytest.raises(ConfigError, match="augment.corpus are for text classification.*augment.corpus=null"):
        load_config("squad", [f"augment.corpus={tmp_path / 'data'}"])


def test_labelled_train_texts_are_not_also_unlabelled_rows(tmp_path, caplog):
    caplog.set_level(logging.INFO, "distillray")
    write_datasets(tmp_path)
    cfg = load_config(None, [f"augment.corpus={tmp_path}"])
    full = build(tmp_path).texts
    train = TextDataset("train.tsv", np.arange(2), ["a  gorgeous film", "not in the corpus"], np.zeros(2, np.int64),
                        ["0", "1"])
    (corpus,) = load_unlabelled(cfg, train)
    assert "a gorgeous film" not in corpus.texts and corpus.texts == full[1:]
    assert corpus.ids.tolist() == list(range(1, len(full)))  # ids stay corpus positions
    assert "1 of %d texts are labelled train rows" % len(full) in caplog.text
    pairs = dataclasses.replace(train, text_pairs=["x", "y"])  # a pair row is not a single text
    assert load_unlabelled(cfg, pairs)[0].texts == full


def test_bad_corpus_dir_is_one_line_with_the_fix(tmp_path):
    with pytest.raises(DataError) as e:
        load_unlabelled(load_config(None, [f"augment.corpus={tmp_path / 'nowhere'}"]))
    assert "\n" not in str(e.value) and str(e.value).startswith("augment.corpus: ")
    assert "no such directory; fix: set augment.corpus to the datasets' dir" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="none of .* is there; fix"):
        build(tmp_path / "empty")
    with pytest.raises(DataError, match=r"unknown corpus source\(s\) \['wiki'\]; fix: choose from"):
        build(tmp_path, ["wiki"])


def test_split_sentences():
    assert split_sentences('He left. "Why?" she asked. It was 5 p.m. then.  ') == \
        ["He left.", '"Why?" she asked.', "It was 5 p.m. then."]
    assert split_sentences("Born in 1990, e.g. in Oslo. 1991 came next!") == \
        ["Born in 1990, e.g. in Oslo.", "1991 came next!"]


def test_real_rte_pairs_give_both_sentences():
    path = shared_data("rte/train.tsv")
    corpus = build(path.parent.parent, ["rte"])
    assert corpus.texts[:2] == ["No Weapons of Mass Destruction Found in Iraq Yet.",
                                "Weapons of Mass Destruction Found in Iraq."]
    assert 4000 < corpus.sources["rte"] <= 2 * 2490
