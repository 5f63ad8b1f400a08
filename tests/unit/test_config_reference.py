"""README.md's configuration reference is generated from the config tree and must match it:
every key, its type, default and description. Fix a failure with `python -m distillray.docs --write`."""

from __future__ import annotations

import pytest

from conftest import REPO
from distillray import docs
from distillray.config import Config
from distillray.config.tree import _known_keys


def test_readme_reference_matches_the_config_tree():
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    found = docs.find_block(text)
    if found is None:
        pytest.fail(f"README.md has no configuration reference between {docs.START} and {docs.END}; "
                    f"{docs.WRITE_HINT} (then move the section where it belongs)")
    if found != docs.block():
        pytest.fail(f"README.md's configuration reference is out of date with distillray/config/sections.py; {docs.WRITE_HINT}")


def test_every_key_has_a_row_and_a_description():
    rows = list(docs.rows())
    assert [r[0] for r in rows] == _known_keys(Config)
    undocumented = [key for key, _, _, desc in rows if not desc]
    assert not undocumented, (f"config keys without a description: {undocumented}; add a docstring "
                              "line under each field in distillray/config/sections.py")


def test_table_shows_types_bounds_and_defaults():
    table = {r[0]: r for r in docs.rows()}
    assert table["train.lr"][1:3] == ("float, > 0, <= 1", "5e-05")
    assert table["data.format"][1] == "auto, tsv, csv, jsonl or parquet"
    assert table["teacher.finetune"][1:3] == ("bool | auto", '"auto"')
    assert table["student.layers"][1:3] == ("list[int] | null", "null")
    assert '"distill.temperature"' in table["tune.space"][2]
    assert "| `data.labels` | list[str \\| int] \\| null |" in docs.config_reference()


def test_write_inserts_then_replaces_the_block_in_place(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n\nIntro.\n")
    assert docs.main(["--check", "--readme", str(readme)]) == 1
    assert docs.WRITE_HINT in capsys.readouterr().err
    assert docs.main(["--write", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nIntro.\n\n## Configuration reference\n") and docs.block() in text
    stale = text.replace(docs.block(), f"{docs.START}\nold table\n{docs.END}") + "\n## Later section\n"
    readme.write_text(stale)
    assert docs.update_readme(readme) is True
    assert readme.read_text() == text + "\n## Later section\n"
    assert docs.update_readme(readme) is False
    assert docs.main(["--check", "--readme", str(readme)]) == 0
