# Thin wrappers over ./dev, for those who type make.
.PHONY: run test setup lint supervised bench
run:
	./dev run
test:
	./dev test
setup:
	./dev setup
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
supervised:
	./dev supervise
bench:
	./dev bench
