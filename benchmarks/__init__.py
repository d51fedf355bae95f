"""Benchmarks: scripts that print numbers and write JSON to benchmarks/results/ (never tests)."""
