# distillray: two commands do everything on a fresh machine.
#   make demo   set up, then run jobs/distill.py on the offline demo preset on a local Ray
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
TORCH  := torch==2.13.0
SST2   := ../shared/data/sst2/train.tsv
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit test-integration bench clean

setup: $(STAMP)

# torch first, pinned: any unpinned torch (or one pulled in by deepspeed's build) would be a
# multi-GB CUDA build. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(BIN)/python -c "import distillray, torch, ray, deepspeed, transformers; print('setup ok: torch', torch.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)"
	touch $(STAMP)

demo: setup
	@if [ -f $(SST2) ]; then \
	  $(BIN)/python jobs/distill.py --config demo $(ARGS); \
	else \
	  echo "$(SST2) not found: running the demo on the built-in smoke sample (pipeline check only)"; \
	  $(BIN)/python jobs/distill.py --config demo data.train=smoke data.dev=smoke data.max_rows=null $(ARGS); \
	fi

test: setup
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
