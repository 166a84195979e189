# The two commands a new user needs:
#   make run    install everything into .venv and serve sample_media/ with conf/mediaproxy.toml
#               (make run ARGS="--port 8081" passes flags on)
#   make test   install everything (test clients included) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= conf/mediaproxy.toml
ARGS ?=
BIN = $(VENV)/bin
# The install says one line; pip's errors still show, its notes and setuptools' banners do not.
PIP_QUIET = PYTHONWARNINGS=ignore $(BIN)/python -m pip install -qq

# A few MB, so generated once rather than committed (README: "Sample media").
CLIP = sample_media/video/testsrc2-720p-h264.mp4

.PHONY: run test test-fast check bench system-deps clean

$(BIN)/mediaproxy: setup.cfg pyproject.toml
	@scripts/system-deps.sh run
	@echo "mediaproxy: installing into $(VENV) (first run only)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP_QUIET) --upgrade pip
	@$(PIP_QUIET) -e '.[test]'
	@touch $@

$(CLIP): scripts/make_sample_media.sh
	@scripts/make_sample_media.sh clip

run: $(BIN)/mediaproxy $(CLIP)
	@$(BIN)/mediaproxy --config $(CONFIG) $(ARGS)

test: $(BIN)/mediaproxy $(CLIP)
	scripts/system-deps.sh test
	$(BIN)/python -m ruff check
	$(BIN)/python -m ruff format --check
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

# The quick loop: everything but the tests marked slow (leak checks over 1,000 streams, the
# large bodies); `make test` runs them all.
test-fast: $(BIN)/mediaproxy $(CLIP)
	scripts/system-deps.sh test
	$(BIN)/python -m ruff check
	$(BIN)/python -m ruff format --check
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -m "not slow" -q

bench: $(BIN)/mediaproxy
	bench/setup.sh
	$(BIN)/python bench/run.py
	$(BIN)/python bench/s3.py
	$(BIN)/python bench/plans.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
