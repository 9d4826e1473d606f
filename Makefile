# The README's commands. `make demo` runs the pipeline on the embedded local
# stack; `make test` runs the whole suite against a stack of its own.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The test suite gets its own stack directory so it never disturbs the demo's.
TEST_STACK_DIR ?= .stack-test
# Everything, the fault-injection suite included (kill -9, outages,
# rebalances, and broker failover on a three-node Kafka cluster of its own
# in $(TEST_STACK_DIR)-brokers, which the suite starts and stops);
# `make test-quick` leaves it out, `make test-faults` runs only it.
PYTEST_ARGS ?=

.PHONY: install test test-quick test-faults chaos lint demo bench soak stack-up stack-down clean image

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The whole suite in two lanes at once, each on a stack of its own: the
# fault-injection suite, and everything else (tests/lanes.py says why); stacks
# down even when tests fail; non-zero if either lane failed. With PYTEST_ARGS,
# one pytest run with them on one stack.
test: install lint
	@MASKSTREAM_STACK_DIR=$(TEST_STACK_DIR) $(PY) -m tests.lanes $(PYTEST_ARGS)

test-quick:
	$(MAKE) test PYTEST_ARGS='-m "not faults"'

test-faults:
	$(MAKE) test PYTEST_ARGS='-m faults'

# The random fault schedule at length: 30 faults over 5 minutes, 30,000
# messages, on three brokers (docs/fault-suite.md). NEMESIS_SEED=n replays one.
chaos:
	NEMESIS_FAULTS=$${NEMESIS_FAULTS:-30} NEMESIS_SECONDS=$${NEMESIS_SECONDS:-300} \
	NEMESIS_MESSAGES=$${NEMESIS_MESSAGES:-30000} \
	$(MAKE) test PYTEST_ARGS='-s tests/test_broker_faults.py -k random_fault_schedule'

demo: install
	$(PY) -m stream.cli demo

bench: install
	$(PY) -m stream.cli stack up > /dev/null
	$(PY) -m bench $(BENCH)

# The container image from the Dockerfile, without a Docker engine: buildah on
# a stand-in for python:3.11-slim made with debootstrap (root; the script says
# what it needs). For Docker elsewhere: `buildah push IMAGE
# docker-archive:maskstream.tar:maskstream:local`, then `docker load -i maskstream.tar`.
IMAGE ?= localhost/maskstream:local
image:
	bash docker/build-local.sh $(IMAGE)

stack-up: install
	$(PY) -m stream.cli stack up

stack-down: install
	$(PY) -m stream.cli stack down

clean: stack-down
	rm -rf .stack $(TEST_STACK_DIR) $(TEST_STACK_DIR)-brokers

# A million messages end to end: throughput over time and RSS (not a test).
soak: install
	$(PY) -m stream.cli stack up > /dev/null
	$(PY) -m bench.soak $(SOAK_ARGS)
