"""Orchestration: turning experiments and parameters into tables (Dask graphs to come)."""
