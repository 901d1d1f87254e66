# Two entry points, each sets itself up: `make run` (the main job) and `make test`.
# The project's own virtual environment lives in .venv: the exact versions pinned in
# requirements.lock, then the project itself (editable, no dependencies). It is refreshed
# whenever pyproject.toml or requirements.lock changes; `make lock` regenerates the lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: run test setup lock sweep report bench results clean

setup: $(STAMP)

UV_VERSION ?= 0.13.9
UV := .venv-lock/bin/uv
$(UV):
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
# uv copies from its cache (a hard link fails across file systems, with a warning).
export UV_LINK_MODE := copy

# uv installs the lock (about 3x faster than pip from empty caches: docs/benchmarks.md, "Set-up");
# it comes pinned from PyPI into its own small venv, .venv-lock/, shared with `make lock`.
# .venv keeps pip for users' own additions (the GPU build of TensorFlow, README).
# --compile-bytecode: uv does not write .pyc files at install (pip does); where Python may not
# write them either (PYTHONDONTWRITEBYTECODE=1, common in CI images and on this project's
# machines), every process would compile TensorFlow's thousands of modules again on import.
$(STAMP): pyproject.toml requirements.lock | $(UV)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

# requirements.lock: every dependency of pyproject.toml (with the `test` extra), direct and
# transitive, at one exact version, resolved by uv for .venv's Python. uv keeps the pins already
# in the lock unless pyproject.toml rules them out; `make lock UPGRADE=1` moves every pin to the
# newest allowed version. uv lives in its own small venv (.venv-lock), not in .venv.
# Afterwards: update environment.yml's pins (tests/test_packaging.py checks them) and run
# `make setup`.

lock: $(UV)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(UV) pip compile pyproject.toml --extra test --python $(BIN)/python \
	    --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) --quiet -o requirements.lock

# The main job: the default sweep on the embedded synthetic cohort, then the report.
run: $(STAMP)
	$(BIN)/fusionlib run --jobs 2 params/*.yaml
	$(BIN)/fusionlib report

# The whole test suite, in TEST_WORKERS processes (pytest-xdist; `make test TEST_WORKERS=0` runs
# it in this one process). `--dist loadfile` hands each test file whole to one worker, so a
# module's expensive fixtures (tiny sweeps, trained branches) are built once and its tests run in
# file order. pytest exits 5 when it ran no test: that is a failure here.
TEST_WORKERS ?= 2
test: $(STAMP)
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; exit 1; fi; exit $$rc

# Every table of docs/results.md: each study's committed params files (seeds 0-2 inside) run
# through the runner into runs-study/<study>/, then tabulated (25-45 minutes on 2 cores from a
# cold cache; unchanged runs are kept). The real-table study runs only where ../shared is.
results: $(STAMP)
	$(BIN)/python -m fusionlib.study --out docs/results.md

bench: $(STAMP)
	$(BIN)/python bench/bench_sweep.py

clean:
	rm -rf runs runs-study .cache reports/*.html data/generated
