# Developer commands. `make lint` and `make test` are what CI runs (.ci/run).
.PHONY: test test-fast test-heavy lint bench bench-quick venv

venv:
	@scripts/bootstrap.sh test

lint: venv
	.venv/bin/ruff check
	.venv/bin/mypy

# Four workers on two cores: an e2e test mostly waits on its gateway, SDK and mock processes. A file
# stays on one worker (--dist loadfile), so its module-scoped gateway starts once.
TEST_WORKERS ?= 4

test: venv
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# The in-process tests: no gateway process, no SDK over sockets.
test-fast: venv
	.venv/bin/python -m pytest -q tests/unit $(ARGS)

# Exit code 5 (no heavy test selected) is not a failure.
test-heavy: venv
	.venv/bin/python -m pytest -q -m heavy $(ARGS) || [ $$? -eq 5 ]

bench:
	bench/run $(ARGS)

bench-quick:
	bench/run --quick $(ARGS)
