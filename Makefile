.PHONY: test bench bench-tiny

test:
	pytest

# The full side-by-side benchmark and patch sweep on this machine (tens of minutes on 2 cores).
bench:
	znnx bench --sweep --out benchmarks/results

bench-tiny:
	znnx bench --tiny --sweep --reps 1 --warmup 0 --out /tmp/znnx-bench-tiny
