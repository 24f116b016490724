# The two commands of the README:
#   make train   set everything up, fetch MNIST, train the default preset, print its test accuracy
#   make test    set everything up for the tests (system packages too, when root) and run them all
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: train test lint format bench fuzz clean

train: $(VENV)/.installed
	$(BIN)/digitnet train --preset default

test: lint
	$(BIN)/python -m pytest -q

# Lint and format check (rules in pyproject.toml); `make format` rewrites the files.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed-bench
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/epoch_speed.py

# A long coverage-guided search (atheris) over every file reader; a crash is saved to tests/hostile/.
FUZZ_SECONDS ?= 3600
fuzz: $(VENV)/.installed-fuzz
	$(BIN)/python fuzz/fuzz_readers.py --seed fuzz/corpus
	mkdir -p fuzz/artifacts
	$(BIN)/python fuzz/fuzz_readers.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -timeout=10 \
		-artifact_prefix=fuzz/artifacts/ fuzz/corpus

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed scripts/system-packages.sh
	bash scripts/system-packages.sh
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-fuzz: $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[fuzz]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
