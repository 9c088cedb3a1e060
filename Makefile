# Thin wrappers over ./dev, for those who type make.
.PHONY: run test setup lint supervised bench
run:
	./dev run
test:
	./dev test
setup:
	./dev setup
lint:
	./dev lint
supervised:
	./dev supervise
bench:
	./dev bench
