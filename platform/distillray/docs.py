"""The configuration reference (docs/configuration.md), generated from the config tree so it never drifts.

Every key of `distillray.config.Config` becomes one table row: dotted key, type (with its
range), built-in default and description (the docstring under the field). The table lives in
docs/configuration.md between two markers; `tests/unit/test_config_reference.py` fails when it
is stale.

    python -m distillray.docs            # print the table
    python -m distillray.docs --write    # rewrite the block in docs/configuration.md in place
    python -m distillray.docs --check    # exit 1 when docs/configuration.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from distillray.config import Config

REFERENCE = Path("docs/configuration.md")  # relative to the repo root, where the commands run
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
NOTE = ("<!-- generated from platform/distillray/config/sections.py by `python -m distillray.docs --write`: "
        "edit the field docstrings there, not this table -->")
WRITE_HINT = "run `python -m distillray.docs --write`"
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _type_name(ann: Any) -> str:
    """`int | None`, `auto, tsv or csv`, `list[int]`: how a reader would write the type."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        values = [str(a) for a in args]
        return " or ".join([", ".join(values[:-1]), values[-1]]) if len(values) > 1 else values[0]
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(ann, "__name__", str(ann))


def _bounds(field: FieldInfo) -> str:
    found = [f"{sym} {getattr(m, name)}" for m in field.metadata for name, sym in _BOUNDS
             if getattr(m, name, None) is not None]
    return ", ".join(found)


def _default(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, dict):
        return {k: v.model_dump(exclude_none=True) if isinstance(v, BaseModel) else v for k, v in value.items()}
    return value


def rows(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf key, in declaration order."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from rows(ann, f"{prefix}{name}.")
            continue
        kind = _type_name(ann)
        if bounds := _bounds(field):
            kind += f", {bounds}"
        yield f"{prefix}{name}", kind, json.dumps(_default(field)), (field.description or "").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """The markdown table of every config key (what goes between the markers)."""
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, kind, default, desc in rows():
        lines.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(desc)} |")
    return "\n".join(lines)


def block() -> str:
    """The whole generated block, markers included."""
    return f"{START}\n{NOTE}\n\n{config_reference()}\n\n{END}"


def find_block(text: str) -> str | None:
    """The block (markers included) in a document's text, or None when the markers are missing."""
    m = re.search(re.escape(START) + r".*?" + re.escape(END), text, flags=re.S)
    return m.group(0) if m else None


def update_file(path: Path) -> bool:
    """Rewrite the block in place (appending a section with it when the markers are missing).
    Returns True when the file changed."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    old = find_block(text)
    if old is not None:
        new_text = text.replace(old, block(), 1)
    else:
        new_text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + \
            f"## Configuration reference\n\n{block()}\n"
    if new_text == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite the block in the file in place")
    p.add_argument("--check", action="store_true", help="exit 1 when the file's block is out of date")
    p.add_argument("--file", type=Path, default=REFERENCE, help=f"default: ./{REFERENCE}")
    args = p.parse_args(argv)
    if args.write:
        changed = update_file(args.file)
        print(f"{args.file}: configuration reference {'updated' if changed else 'already up to date'}")
        return 0
    if args.check:
        text = args.file.read_text(encoding="utf-8") if args.file.exists() else ""
        if find_block(text) != block():
            print(f"{args.file}: the configuration reference is missing or stale; {WRITE_HINT}",
                  file=sys.stderr)
            return 1
        return 0
    print(config_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
