"""Running diffrep's stages on a Ray cluster (``--engine ray``).

``ray_index.embed_chunks`` is the embedding stage of ``diffrep index`` on Ray: the images still to embed are
cut into chunk-sized groups, a pool of actors (each loads the descriptor once) embeds them, and the driver
commits each returned chunk into the very index directory the local engine writes, so a killed job resumes at
chunk granularity and the result is the local engine's (same ids, same vectors). Needs ``diffrep[distributed]``.
"""
from __future__ import annotations

ENGINES = ("local", "ray")
