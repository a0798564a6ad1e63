# The two quick-start commands: `make demo` and `make test`.
# Each creates (or reuses) the virtual environment in .venv and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dsoftmax-installed

.PHONY: demo test test-slow test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,s3,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dsoftmax demo

# pytest exits 5 when it collects no test: that is a broken suite, not a pass.
test: $(STAMP)
	$(BIN)/ruff check dsoftmax tests benchmarks examples cluster
	$(BIN)/python -m pytest -m "not slow" ; rc=$$? ; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no test" >&2; exit 1; fi ; exit $$rc

# The long runs (workers and schedulers killed mid-fit, the out-of-core example, the user guide's
# code, the quick benchmarks): minutes.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check dsoftmax tests benchmarks examples cluster

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-data
