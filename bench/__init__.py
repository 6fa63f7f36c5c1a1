"""Benchmarks of issue 7: the real server in its own process, each figure measured with its ceiling in the same run."""
