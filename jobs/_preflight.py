"""Every job imports this first: can this `python` import distillray's dependencies?

`ray job submit ... -- python jobs/X.py` runs the `python` first on the PATH of the node's Ray
(the shell that ran `ray start`, or the cluster's image). When that is not the project's
environment, the job would die deep inside the library with a ModuleNotFoundError traceback.
Instead it stops here, within its first second, with one line on stderr that names the
interpreter, what it lacks and the fix, and exit code 2 (a user error, as in `cli.entrypoint`).

Standard library only, and run on import: it must work before any third-party import, and
before `import distillray` (which such an interpreter may lack too). `find_spec` locates a
top-level package without importing it, so the check costs milliseconds.
"""

from __future__ import annotations

import importlib.util
import sys

# Import names of the [project] dependencies in pyproject.toml that the jobs use, and the library
# itself (a unit test keeps this in step with pyproject.toml).
REQUIRED = ("distillray", "ray", "torch", "transformers", "datasets", "deepspeed", "pyarrow",
            "pydantic", "yaml", "safetensors", "matplotlib", "onnx", "onnxscript", "onnxruntime")

FIX = ("fix: start Ray from the project's environment (`source .venv/bin/activate`, then `ray "
       "start`: a job runs the `python` on the PATH of the shell that started Ray), or install the "
       "project into this interpreter (`pip install -e .`; on a cluster, in every node's image or "
       "setup_commands)")


def missing(names: tuple[str, ...] = REQUIRED) -> list[str]:
    """The names in `names` this interpreter cannot import."""
    gone = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-installed package
            found = False
        if not found:
            gone.append(name)
    return gone


def check(names: tuple[str, ...] = REQUIRED) -> None:
    """Exit 2 with one line on stderr when any of `names` cannot be imported."""
    gone = missing(names)
    if gone:
        print(f"error: {sys.executable or 'python'} cannot import {', '.join(gone)} "
              f"(distillray's dependencies); {FIX}", file=sys.stderr, flush=True)
        raise SystemExit(2)


check()
