"""A small thread-safe LRU cache for per-training-image work (decoded features, object templates):
popular training images recur as candidates across generations, so each is loaded once per run."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Optional, TypeVar

import numpy as np

from ..decode import DecodeError
from ..progress import ProgressCallback, emit

T = TypeVar("T")
P = TypeVar("P")


class LoadingCache(Generic[T]):
    """``get(j)`` returns ``load(j)``, computed once while it stays among the ``capacity`` most recently
    used; a load that fails with OSError / DecodeError gives None and records ``name(j)`` in ``missing``."""

    def __init__(self, load: Callable[[int], T], name: Callable[[int], str], capacity: int = 4096) -> None:
        self.load, self.name, self.capacity = load, name, capacity
        self._items: OrderedDict[int, Optional[T]] = OrderedDict()
        self._lock = threading.Lock()
        self.missing: list[str] = []

    def get(self, j: int) -> Optional[T]:
        with self._lock:
            if j in self._items:
                self._items.move_to_end(j)
                return self._items[j]
        try:
            item: Optional[T] = self.load(j)
        except (OSError, DecodeError):
            item = None
            with self._lock:
                self.missing.append(self.name(j))
        with self._lock:
            self._items[j] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item


def over_candidates(load_query: Callable[[int], Optional[np.ndarray]], n: int, cand: np.ndarray,
                    cache: LoadingCache[T], prepare: Callable[[np.ndarray], P],
                    visit: Callable[[int, int, P, Optional[T]], None], *, stage: str,
                    workers: int | None = None, progress: Optional[ProgressCallback] = None) -> None:
    """For every query ``i`` that decodes (``load_query(i)`` not None): ``prepared = prepare(image)``, then
    ``visit(i, r, prepared, cache.get(j))`` for each candidate ``j = cand[i, r] >= 0``. Queries run in a
    thread pool (OpenCV releases the GIL); progress every 16 queries."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    k = cand.shape[1] if cand.ndim == 2 else 0

    def one(i: int) -> None:
        img = load_query(i)
        if img is None:
            return
        prepared = prepare(img)
        for r in range(k):
            j = int(cand[i, r])
            if j >= 0:
                visit(i, r, prepared, cache.get(j))

    emit(progress, stage, 0, n)
    with ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1)) as pool:
        for done, _ in enumerate(pool.map(one, range(n)), 1):
            if done % 16 == 0 or done == n:
                emit(progress, stage, done, n)
