"""Performance benchmarks (issue "Performance"); run `python -m benchmarks.run_all [--quick]`."""
