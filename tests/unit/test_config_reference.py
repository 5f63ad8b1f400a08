"""docs/configuration.md's reference is generated from the config tree and must match it: every
key, its type, default and description. Fix a failure with `python -m distillray.docs --write`.
The README's short list of common keys is hand-written; it must name real keys and link the
reference."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from distillray import docs
from distillray.config import Config
from distillray.config.tree import _known_keys


def test_reference_matches_the_config_tree():
    path = REPO / docs.REFERENCE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    found = docs.find_block(text)
    if found is None:
        pytest.fail(f"{docs.REFERENCE} has no configuration reference between {docs.START} and {docs.END}; "
                    f"{docs.WRITE_HINT} (then move the section where it belongs)")
    if found != docs.block():
        pytest.fail(f"{docs.REFERENCE}'s configuration reference is out of date with distillray/config/sections.py; "
                    f"{docs.WRITE_HINT}")


def test_readme_common_keys_are_real_keys_and_link_the_reference():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert str(docs.REFERENCE) in section, f"README's Configuration section should link {docs.REFERENCE}"
    sections = "|".join(Config.model_fields)
    named = set(re.findall(rf"`((?:{sections})\.[a-z_]+)", section))
    assert named, "README's Configuration section names no keys"
    unknown = named - set(_known_keys(Config))
    assert not unknown, f"README's Configuration section names keys the config tree lacks: {sorted(unknown)}"
    assert docs.START not in readme, f"the generated reference belongs in {docs.REFERENCE}, not README.md"


def test_every_key_has_a_row_and_a_description():
    rows = list(docs.rows())
    assert [r[0] for r in rows] == _known_keys(Config)
    undocumented = [key for key, _, _, desc in rows if not desc]
    assert not undocumented, (f"config keys without a description: {undocumented}; add a docstring "
                              "line under each field in distillray/config/sections.py")


def test_table_shows_types_bounds_and_defaults():
    table = {r[0]: r for r in docs.rows()}
    assert table["train.lr"][1:3] == ("float, > 0, <= 1", "5e-05")
    assert table["data.format"][1] == "auto, tsv, csv, jsonl, parquet or squad"
    assert table["teacher.finetune"][1:3] == ("bool | auto", '"auto"')
    assert table["student.layers"][1:3] == ("list[int] | null", "null")
    assert '"distill.temperature"' in table["tune.space"][2]
    assert "| `data.labels` | list[str \\| int] \\| null |" in docs.config_reference()


def test_write_inserts_then_replaces_the_block_in_place(tmp_path, capsys):
    doc = tmp_path / "docs" / "configuration.md"
    assert docs.main(["--check", "--file", str(doc)]) == 1
    assert docs.WRITE_HINT in capsys.readouterr().err
    assert docs.main(["--write", "--file", str(doc)]) == 0
    assert doc.read_text().startswith("## Configuration reference\n")
    doc.write_text("# Project\n\nIntro.\n")
    assert docs.main(["--write", "--file", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Project\n\nIntro.\n\n## Configuration reference\n") and docs.block() in text
    stale = text.replace(docs.block(), f"{docs.START}\nold table\n{docs.END}") + "\n## Later section\n"
    doc.write_text(stale)
    assert docs.update_file(doc) is True
    assert doc.read_text() == text + "\n## Later section\n"
    assert docs.update_file(doc) is False
    assert docs.main(["--check", "--file", str(doc)]) == 0
