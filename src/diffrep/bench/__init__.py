"""Benchmark helpers: simulated copies for replication audits."""
