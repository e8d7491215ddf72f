.PHONY: demo test lint format bench

demo:  ## run the demo on http://127.0.0.1:8000
	./scripts/demo

test:  ## the whole test suite (PostgreSQL, Redis, Chromium)
	./scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
