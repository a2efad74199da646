"""Near-duplicate detection inside one image collection (``diffrep dedup``)."""
from .run import DedupResult, dedup

__all__ = ["DedupResult", "dedup"]
