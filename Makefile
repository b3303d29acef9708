# The single interface to the project: setup, demo, test, bench, lint.
VENV   := .venv
PY     := $(VENV)/bin/python
export FLINK_LOG_DIR ?= $(CURDIR)/.flywheel/flink-logs

.PHONY: setup demo demo-image test test-unit bench lint docs fmt lock clean

setup:            ## create .venv, install pinned deps, fetch Flink jars, check Java
	@bash scripts/setup.sh

demo: setup       ## the main job on embedded defaults
	$(PY) -m demo

demo-image: setup ## the image-restoration loop on embedded defaults (real photographs, PSNR)
	$(PY) -m demo.image

test: setup       ## the whole test suite (unit + integration against real components)
	@bash scripts/ensure_debs.sh chromium fonts-liberation postgresql
	$(PY) -m pytest tests

test-unit: setup  ## fast tests only: no JVM, no broker
	$(PY) -m pytest tests/unit

bench: setup      ## benchmarks; they print their figures
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: setup      ## ruff, mypy, the generated reference pages up to date, the docs site with no broken link
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/gen_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs: setup      ## regenerate docs/reference/ from the code and build the site into .flywheel/site
	$(PY) scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

fmt: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock:             ## re-resolve requirements/requirements.in into the lock
	$(VENV)/bin/uv pip compile requirements/requirements.in --python-version 3.11 \
		--find-links /opt/wheels --no-header --no-annotate -o requirements/requirements.lock

clean:
	rm -rf .flywheel build *.egg-info
