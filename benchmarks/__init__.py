"""Benchmarks of clm-spark against DuckDB and a naive Spark job (not part of the package)."""
