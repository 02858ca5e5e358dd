# runtime-agent: `make run` sets up and runs the examples; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# nsjail linked statically (scripts/build-nsjail.sh): ~5 ms less CPU per sandbox start.
NSJAIL := $(VENV)/libexec/runtime-agent/nsjail
DATA ?= $(CURDIR)/.data

.PHONY: setup setup-test run test bench native clean

$(BIN)/python:
	./scripts/setup-host.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3

$(NSJAIL): scripts/build-nsjail.sh $(wildcard scripts/nsjail-*.patch) | $(BIN)/python
	rm -f $(NSJAIL)
	PIP=$(BIN)/pip ./scripts/build-nsjail.sh $(NSJAIL)

setup: $(BIN)/python $(NSJAIL)
	$(BIN)/pip install -q .

# tests/conformance: aws-lambda-ric (npm) builds its native client with cmake, make and g++;
# tests/unit/test_nsjail_binary.py traces nsjail with strace.
setup-test: $(BIN)/python $(NSJAIL)
	./scripts/setup-host.sh cmake make g++ strace
	$(BIN)/pip install -q ".[test]"

# Starts an agent on the embedded store in $(DATA), deploys examples/ and invokes them.
run: setup
	$(BIN)/python examples/run_examples.py --data-dir $(DATA)

test: setup-test
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup-test
	$(BIN)/python bench/run.py

# native/: libimgresize.so, its C++ unit tests (run) and the cffi facade, into
# native/build/. Not needed by run or test: the example's build step (fnctl
# package) and native/tests build what they use.
native: setup
	$(BIN)/python native/build.py --test

clean:
	rm -rf $(VENV) build *.egg-info .data native/build examples/*/.build tests/conformance/.build
