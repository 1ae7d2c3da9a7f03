# One entry point for newcomers, CI and the demo. Everything runs from a fresh machine:
# the virtualenv, Kafka (from Maven Central), Redis and Prometheus (from apt), helm and kube-score
# (go install) are installed on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CACHE  ?= $(HOME)/.cache/pisano-sms
HELM_VERSION := v3.19.0
HELM   := $(CACHE)/helm-$(HELM_VERSION)/helm
KUBE_SCORE_VERSION := v1.20.0
KUBE_SCORE := $(CACHE)/kube-score-$(KUBE_SCORE_VERSION)/kube-score
# cargo: rustup's default place, for the native core (native/).
export PATH := $(dir $(HELM)):$(dir $(KUBE_SCORE)):$(HOME)/.cargo/bin:$(PATH)

.PHONY: install helm kube-score up up-cluster down demo test test-unit lint bench bench-limiter bench-poll bench-latency bench-sizing chaos clean

install: $(VENV)/.installed

## The native core (native/: Rust, built with maturin; consumer/ingest/fused.py) is built here too:
## about a minute the first time. The consumer runs without it (NATIVE_INTAKE), the suite does not.
$(VENV)/.installed: pyproject.toml native/Cargo.toml native/pyproject.toml $(wildcard native/src/*.rs)
	@echo "[make] creating $(VENV) and installing the package with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@command -v cargo > /dev/null || { echo "[make] cargo not found: install Rust (https://rustup.rs) to build the native core"; exit 1; }
	@echo "[make] building the native core (native/, Rust) with maturin"
	$(BIN)/pip install -q ./native
	@touch $@

helm: $(HELM)

$(HELM):
	@echo "[make] building helm $(HELM_VERSION) with go install (once, about a minute)"
	GOBIN=$(dir $(HELM)) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

## The chart's manifests are scored with kube-score in the suite (tests/integration/test_helm_chart.py).
kube-score: $(KUBE_SCORE)

$(KUBE_SCORE):
	@echo "[make] building kube-score $(KUBE_SCORE_VERSION) with go install (once, about a minute)"
	GOBIN=$(dir $(KUBE_SCORE)) go install github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION)

up: install
	$(BIN)/python scripts/localstack.py up

## The stack plus a local Redis Cluster (three masters, three replicas) beside the single Redis.
up-cluster: install
	$(BIN)/python scripts/localstack.py up --redis-cluster

## Also the second test worker's stack, if an interrupted `make test` left it running
## (tests/conftest.py: 500 ports higher, in .stack-gw1/).
down:
	$(BIN)/python scripts/localstack.py down
	if [ -d .stack-gw1 ]; then PISANO_STACK_DIR=.stack-gw1 PISANO_STACK_KAFKA_PORT=19592 \
		PISANO_STACK_REDIS_PORT=16879 $(BIN)/python scripts/localstack.py down; fi

## The main job on the local stack: Kafka, Redis, the Pisano simulator and the consumer.
demo: up
	$(BIN)/python scripts/localstack.py run -- $(BIN)/pisano-sms demo

## The whole suite: lint, then every test. The unit tests first, one worker per core (they need
## no stack); then the rest on STACK_WORKERS pytest-xdist workers, a file at a time each, every
## worker on a Kafka and Redis of its own that it starts (unless already up) and stops
## (tests/conftest.py). They mostly wait on real processes, so two workers share two cores well.
STACK_WORKERS ?= 2
test: install helm kube-score lint
	$(BIN)/python -m pytest tests/unit -n auto --durations=10
	$(BIN)/python scripts/localstack.py install
	$(BIN)/python -m pytest tests --ignore=tests/unit -n $(STACK_WORKERS) --dist loadfile --durations=30

test-unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check consumer tests scripts benchmarks
	$(BIN)/mypy
	@echo "[make] lint ok"

bench: up
	$(BIN)/python scripts/localstack.py run -- $(BIN)/python benchmarks/throughput.py

bench-limiter: up
	$(BIN)/python scripts/localstack.py run -- $(BIN)/python benchmarks/limiter.py

## The poll loop's own CPU per event (snapshot, decode, map, check, batch, offsets), 100,000 events.
bench-poll: up
	$(BIN)/python scripts/localstack.py run -- $(BIN)/python benchmarks/poll_loop.py --events 100000

## 1,000,000 remembered events on the Redis Cluster and the single Redis: keys, bytes, throughput (README, "Redis Cluster").
bench-sizing: up-cluster
	$(BIN)/python scripts/localstack.py run -- $(BIN)/python benchmarks/sizing.py --events 1000000

## Latency under Pisano's windows (steady loads, a spike) and saturation by a backlog, before and
## after pacing; about 20 minutes (README, "Benchmarks").
bench-latency: up
	$(BIN)/python scripts/localstack.py run -- $(BIN)/python benchmarks/latency.py --mode all

## Every fault at once on a fleet of three replicas, 100,000 events; prints the figures (README, "Chaos").
chaos: up
	$(BIN)/python -m tests.chaos.chaos_run --events 100000

clean: down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
