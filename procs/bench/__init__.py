"""Benchmarks behind `scanner bench NAME`, each against a baseline measured in the same run, and
the throwaway local services (`services`) that the benchmarks and `make test` start."""
