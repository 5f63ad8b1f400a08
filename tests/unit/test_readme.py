"""The README stays a newcomer's page: under 15 KB (the reference, results and operations live in
docs/), and every docs/ link in it points at a file that exists."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_is_short_and_its_docs_links_exist():
    readme = REPO / "README.md"
    assert readme.stat().st_size < 15_000, f"README.md is {readme.stat().st_size} bytes; move detail to docs/"
    links = set(re.findall(r"\]\((docs/[^)#]+)", readme.read_text(encoding="utf-8")))
    assert links, "README links no docs/ page"
    assert not [link for link in links if not (REPO / link).exists()]
