# The two commands: `make run` (the product locally) and `make test` (the whole test suite).
# Both set everything up first; see scripts/dev.sh.
.PHONY: run test setup lint clean

run:
	@bash scripts/dev.sh run

test:
	@bash scripts/dev.sh test

setup:
	@bash scripts/dev.sh setup

lint:
	@bash scripts/dev.sh lint

clean:
	rm -rf .venv node_modules .run .pytest_cache .mypy_cache .ruff_cache
