"""Performance benchmarks for the engine (issue 5): `python -m benchmarks.run [--quick]`."""
