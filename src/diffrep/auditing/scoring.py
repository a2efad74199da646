"""The audit's per-image stages, applied the same way to generations, reference images and the training-set
null: verify the global candidates (``matching.verify``, re-ranked), search every window and local features
(``--partial``: ``partial.py``), find each region candidate's object in the image (``objects.py``), and gate
the verified and pixel channels by specificity (``specificity.py``). Each set comes out as one ``Evidence``
(``channels.py``)."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..decode import load_image
from ..descriptors import Descriptor
from ..descriptors.regions import RegionConfig, RegionEmbedder
from ..indexing.load import LoadedIndex
from ..indexing.local import LocalConfig, open_local
from ..matching.null import train_null
from ..matching.rerank import Reranked, best_scores, verify_rows
from ..matching.verify import Verifier
from ..progress import ProgressCallback
from .channels import Evidence
from .objects import ObjectConfig, ObjectMatcher, ObjectMatches, object_rows
from .partial import RegionMatches, region_rows, region_search
from .specificity import SpecificityConfig, gate_pixel_channels

Reader = Callable[[], bytes]


@dataclass
class StageConfig:
    """Which stages run and their settings (the audit's options)."""

    verifier: Optional[Verifier] = None  # None: no verification (--no-verify or --threshold)
    verify_k: int = 3  # candidates verified (kv)
    partial: bool = False
    partial_k: int = 10
    local_k: int = 10
    region_config: Optional[RegionConfig] = None
    object_config: Optional[ObjectConfig] = None
    local_config: Optional[LocalConfig] = None
    specificity: Optional[SpecificityConfig] = None  # used only with partial and verification
    max_pixels: int = 0


@dataclass
class Stages:
    """The stages of one audit against one index; ``missing`` collects training files that could not be read."""

    idx: LoadedIndex
    descriptor: Descriptor
    config: StageConfig
    progress: Optional[ProgressCallback] = None
    missing: set[str] = field(default_factory=set)
    rows: Any = None  # engine for rows of work (``distributed.ray_rows.map_rows`` bound); None: this process

    def __post_init__(self) -> None:
        c = self.config
        self.train_path = self.idx.lookup("path")
        self.emb = RegionEmbedder(self.descriptor, c.region_config) if c.partial else None
        self.matcher = ObjectMatcher(c.object_config) if c.partial else None
        self.spec = c.specificity if c.partial and c.verifier is not None else None
        self._local: Any = None

    @property
    def local(self) -> Any:
        """The local-feature index (built in the index directory on first use), with ``--partial --local-k``."""
        c = self.config
        if self._local is None and c.partial and c.local_k:
            self._local = open_local(self.idx, c.local_config or LocalConfig(), progress=self.progress)
        return self._local

    def score(self, readers: list[Reader], g_scores: np.ndarray, g_ids: np.ndarray, name: str) -> Evidence:
        """Evidence for images ``readers`` whose global top-k are ``g_scores`` / ``g_ids``; ``name`` names the
        progress stages (``queries``, ``reference``)."""
        ev = Evidence({"global": g_scores[:, 0]}, ids=g_ids, topk=g_scores)
        if self.config.verifier is not None:
            ev.reranked = self.verify(readers, g_ids, f"verify-{name}")
            ev.scores["verified"], ev.scores["pixel"] = best_scores(ev.reranked.scores), best_scores(ev.reranked.pixel)
        if self.emb is not None:
            ev.regions = self.regions(readers, f"regions-{name}")
            ev.objects = self.objects(readers, ev.regions, f"objects-{name}")
            ev.scores["region"], ev.scores["object"] = ev.regions.top, ev.objects.top
        if self.spec is not None:
            ev.scores["verified"], ev.scores["pixel"], ev.void, ev.allowed = self.gate(ev.reranked, g_scores, g_ids,
                                                                                      ev.regions)
        return ev

    def _rows(self, job: Any, readers: list[Reader], cand: np.ndarray, stage: str) -> list[Any]:
        """``job`` over all rows in this process, or in parts on the ``rows`` engine (results in row order)."""
        if self.rows is None:
            return [job(readers, cand, self.train_path, stage=stage, progress=self.progress)]
        return self.rows(job, readers, cand, self.train_path, stage=stage, progress=self.progress)

    def verify(self, readers: list[Reader], cand: np.ndarray, stage: str) -> Reranked:
        v = self.config.verifier
        assert v is not None
        job = functools.partial(verify_rows, config=v.config, max_pixels=self.config.max_pixels)
        rr = Reranked.concat(self._rows(job, readers, cand[:, :self.config.verify_k], stage))
        self.missing.update(rr.missing)
        return rr

    def regions(self, readers: list[Reader], stage: str, self_ids: np.ndarray | None = None) -> RegionMatches:
        """Region matches of ``readers`` (``self_ids``: their own ids when they are training images), in this
        process or in parts on the ``rows`` engine (whose workers open the index directory themselves)."""
        assert self.emb is not None
        c, n = self.config, len(self.idx)
        local = self.local  # built now, before any worker opens it
        if self.rows is not None and readers:
            t0 = time.perf_counter()
            own = np.full(len(readers), -1, np.int64) if self_ids is None else np.asarray(self_ids, np.int64)
            spec = self.descriptor.fingerprint().get("spec") or self.descriptor.name
            job = functools.partial(region_rows, root=str(self.idx.dir.root),
                                    generation=int(self.idx.meta["generation"]), spec=spec,
                                    region_config=self.emb.config, local_config=c.local_config or LocalConfig(),
                                    k=min(c.partial_k, n), local_k=min(c.local_k, n), max_pixels=c.max_pixels)
            return RegionMatches.concat(self._rows(job, readers, own[:, None], stage), time.perf_counter() - t0)
        side = max(self.emb.config.sizes)
        return region_search(lambda i: load_image(readers[i], c.max_pixels, side), len(readers), self.idx, self.emb,
                             k=min(c.partial_k, n), self_ids=self_ids, stage=stage, local=local,
                             local_k=min(c.local_k, n), train_vectors=self.idx.vectors, progress=self.progress)

    def objects(self, readers: list[Reader], rm: RegionMatches, stage: str) -> ObjectMatches:
        assert self.matcher is not None
        t0 = time.perf_counter()
        job = functools.partial(object_rows, config=self.matcher.config, max_pixels=self.config.max_pixels)
        om = ObjectMatches.concat(self._rows(job, readers, rm.ids, stage), time.perf_counter() - t0)
        self.missing.update(om.missing)
        return om

    def gate(self, rr: Reranked, g_scores: np.ndarray, g_ids: np.ndarray,
             rm: RegionMatches | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(verified, pixel, void, allowed) of the verified candidates ``g_ids[:, :kv]`` (specificity.py)."""
        assert self.spec is not None
        return gate_pixel_channels(rr.scores, rr.pixel, g_ids[:, :rr.scores.shape[1]], g_scores, g_ids,
                                   None if rm is None else rm.scores, None if rm is None else rm.ids,
                                   self.idx.vectors, self.spec)

    def training_null(self, sample: int, seed: int, global_k: int) -> Evidence:
        """Evidence of up to ``sample`` training images, each against the *other* training images
        (``matching.null.train_null``): the null when no reference images are given."""
        c = self.config

        def partial_null(readers: list, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, RegionMatches]:
            rm = self.regions(readers, "regions-background", ids)
            return rm.top, self.objects(readers, rm, "objects-background").top, rm

        glob, verified, region, pixel, obj, void = train_null(
            self.idx, c.verifier, c.verify_k, sample, seed, c.max_pixels, self.progress,
            partial_null if self.emb is not None else None,
            gate=(lambda *a: self.gate(*a)[:3]) if self.spec is not None else None, global_k=global_k)
        named = {"global": glob, "verified": verified, "region": region, "pixel": pixel, "object": obj}
        return Evidence({k: v for k, v in named.items() if v is not None}, void)
