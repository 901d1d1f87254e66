# Two entry points, each sets itself up: `make run` (the main job) and `make test`.
# The project's own virtual environment lives in .venv and is refreshed whenever
# pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: run test setup sweep report bench results clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

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

# docs/results.md's generated tables: every variant vs fixed, every decision rule, 3 seeds
# (about 25 minutes on 2 cores; finished runs under runs-study/ are reused).
results: $(STAMP)
	$(BIN)/python -m fusionlib.study --out docs/results.md

bench: $(STAMP)
	$(BIN)/python bench/bench_sweep.py

clean:
	rm -rf runs runs-study .cache reports/*.html data/generated
