"""``python -m benchmarks ...``: see benchmarks/bench.py."""

from .bench import main

main()
