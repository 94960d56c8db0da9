# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,lint,embeddings]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tierflow demo

# Two lanes at once: the tests that mostly wait (a five-minute model call, messages the
# reconciler must find lost) on Redis database TIERFLOW_TEST_REDIS_DB + 1, the rest as usual.
# Each lane has its own PostgreSQL database and RabbitMQ virtual host; both must pass.
WAITS_DB := $(shell echo $$(( $${TIERFLOW_TEST_REDIS_DB:-11} + 1 )))

test: $(STAMP)
	@mkdir -p .tierflow
	@TIERFLOW_TEST_REDIS_DB=$(WAITS_DB) $(BIN)/python -m pytest -m "waits and not live" -p no:cacheprovider \
		> .tierflow/waits.log 2>&1 & waits=$$!; \
	$(BIN)/python -m pytest -m "not waits and not live"; rest=$$?; \
	wait $$waits; waited=$$?; \
	echo "---- the waiting lane (-m waits) ----"; cat .tierflow/waits.log; \
	exit $$(( rest || waited ))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .tierflow .pytest_cache
