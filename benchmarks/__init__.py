"""Benchmarks: commands that print tables (medians, p95, ratios against a baseline measured in the same run)."""
