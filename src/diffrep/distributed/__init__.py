"""Running diffrep's stages on a Ray cluster (``--engine ray``).

``ray_data`` is the embedding pipeline on Ray Data: decoding tasks feed a pool of actors that each load the
descriptor once. ``ray_index`` runs ``diffrep index``'s and ``diffrep audit``'s embedding stages on it (the driver
commits chunks into the very index directory the local engine writes, so a killed job resumes at chunk granularity
and the result is the local engine's: same ids, same vectors), indexes tar and Parquet shards (a decoding task per
shard), and fills IVF indexes in Ray tasks. ``ray_rows`` runs the audit's per-image stages in tasks. Needs
``diffrep[distributed]``.
"""
from __future__ import annotations

ENGINES = ("local", "ray")
