"""Index directories: build (``index``), open (``open_index``), search."""
from .build import IndexResult, index
from .load import LoadedIndex, open_index

__all__ = ["IndexResult", "index", "LoadedIndex", "open_index"]
