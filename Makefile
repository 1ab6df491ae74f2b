# Developer commands. `make test` is what CI runs (.ci/run).
.PHONY: test test-heavy bench bench-quick venv

venv:
	@scripts/bootstrap.sh test

test: venv
	.venv/bin/python -m pytest -q $(ARGS)

test-heavy: venv
	.venv/bin/python -m pytest -q -m heavy $(ARGS)

bench:
	bench/run $(ARGS)

bench-quick:
	bench/run --quick $(ARGS)
