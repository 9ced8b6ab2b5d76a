"""Benchmarks of the mesh client: `python -m bench [overhead|balancers] [--quick]`."""
