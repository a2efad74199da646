"""Cost of the partial-replication search per generated image vs training-index size.

    python benchmarks/bench_partial.py --sizes 10000 100000 --queries 8

The windows of real emoji composites (two scales, ~4.3k windows per image with the default config) are
searched in an index of N training vectors: the real SSCD vectors of the emoji set, padded to N with
random unit vectors (the search cost does not depend on the content for a flat index). Reported: the
feature-map + pooling time and the object-matching time for ``--partial-k`` candidates (both independent
of N) and the search time, for an exact flat index and an HNSW index (``--index-type hnsw`` / ``auto`` at
1M+), in seconds per generated image. With ``--local-sizes``: the local-feature voting
(``diffrep.indexing.local``) per generated image against N training images, whose RootSIFT descriptors are
the real descriptors of 1,000 emoji, repeated with small noise to N images (FAISS index chosen by
``faiss_index.build('auto')`` as ``diffrep audit`` does: exact below 250k descriptors, IVF above).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from diffrep import datasets as data
from diffrep.auditing.objects import ObjectMatcher, object_template
from diffrep.auditing.partial import FlatIndex, aggregate
from diffrep.eval.bench.edits import compose_on_white
from diffrep.eval.bench.generate import SourceImage, make_query, object_mask
from diffrep.descriptors import get_descriptor
from diffrep.descriptors.regions import RegionEmbedder


class HNSW:
    def __init__(self, vectors: np.ndarray, m: int = 32, ef_search: int = 64) -> None:
        import faiss

        self._index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = 80
        self._index.add(np.ascontiguousarray(vectors, np.float32))
        self._index.hnsw.efSearch = ef_search

    def search(self, q: np.ndarray, k: int):  # noqa: ANN201
        return self._index.search(np.ascontiguousarray(q, np.float32), k)

    def __len__(self) -> int:
        return int(self._index.ntotal)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--descriptor", default="sscd")
    ap.add_argument("--partial-k", type=int, default=20,
                    help="object-matched candidates per image (audit default: 10 region + 10 local)")
    ap.add_argument("--local-sizes", type=int, nargs="*", default=[],
                    help="training-set sizes (images) for the local-feature voting benchmark")
    args = ap.parse_args()
    d = get_descriptor(args.descriptor)
    emb = RegionEmbedder(d)
    files = sorted((data.get_dataset("emoji") / "images").glob("*.png"))
    real = d.embed_images([np.asarray(compose_on_white(Image.open(f))) for f in files[:1000]])
    queries = []
    for i in range(args.queries):
        with Image.open(files[1000 + i]) as im:
            rgba = im.convert("RGBA")
        mask, how = object_mask(rgba)
        with Image.open(files[2000 + i]) as f:
            fill = f.convert("RGBA")
        q = make_query("segmix", SourceImage(compose_on_white(rgba), mask, how), fill, np.random.default_rng(i))
        queries.append(np.asarray(q.image))
    t0 = time.perf_counter()
    windows = [emb.regions(q) for q in queries]
    t_embed = (time.perf_counter() - t0) / len(queries)
    print(f"{args.descriptor}: {len(windows[0][0])} windows per image, feature maps + pooling "
          f"{t_embed:.3f} s per image (independent of the index size)")
    matcher = ObjectMatcher()
    templates = [object_template(f.read_bytes()) for f in files[:args.partial_k]]
    t0 = time.perf_counter()
    for q in queries:
        prepared = matcher.prepare(q)
        for t in templates:
            matcher.match(prepared, t)
    t_obj = (time.perf_counter() - t0) / len(queries)
    print(f"object matching: {t_obj:.3f} s per image for {args.partial_k} candidates (one thread; independent "
          "of the index size)")
    t_embed += t_obj
    rng = np.random.default_rng(0)
    if args.local_sizes:
        local_bench(files, queries, args.local_sizes, rng)
    print("| training vectors | index | build (s) | search per image (s) | total per image (s) |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        pad = rng.standard_normal((max(0, n - len(real)), real.shape[1])).astype(np.float32)
        vecs = np.concatenate([real, pad / np.linalg.norm(pad, axis=1, keepdims=True)])[:n]
        for name, make in (("flat", FlatIndex), ("hnsw", HNSW)):
            t0 = time.perf_counter()
            index = make(vecs)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            for v, b in windows:
                s, j = index.search(v, 3)
                aggregate(s, j, b, 5)
            t_search = (time.perf_counter() - t0) / len(windows)
            print(f"| {n:,} | {name} | {t_build:.1f} | {t_search:.3f} | {t_embed + t_search:.3f} |", flush=True)


def local_bench(files: list, queries: list[np.ndarray], sizes: list[int], rng: np.random.Generator) -> None:
    from diffrep.decode import decode_image
    from diffrep.indexing import faiss_index
    from diffrep.indexing.local import LocalConfig, LocalIndex, local_features

    per = [local_features(decode_image(f.read_bytes())) for f in files[:1000]]
    print(f"local features: {np.mean([len(p) for p in per]):.0f} RootSIFT descriptors per training emoji")
    print("| training images | descriptors | FAISS index | build (s) | voting per image (s) |")
    print("|---|---|---|---|---|")
    for n in sizes:
        counts = np.array([len(per[i % len(per)]) for i in range(n)], np.int32)

        def batches():  # the real descriptors, repeated with noise past the first 1,000 images
            for s0 in range(0, n, 1000):
                block = np.concatenate([per[i % len(per)] for i in range(s0, min(n, s0 + 1000))])
                if s0:
                    block = np.abs(block + rng.normal(0, 0.02, block.shape).astype(np.float32))
                    block /= np.linalg.norm(block, axis=1, keepdims=True)
                yield block

        total = int(counts.sum())
        want = max(200_000, 40 * faiss_index.ivf_lists(total))  # as build_local samples
        sample = np.concatenate(list(b[:: max(1, total // want)] for b in batches()))
        t0 = time.perf_counter()
        index, params = faiss_index.build(batches(), total, 128, "auto", train_sample=sample)
        faiss_index.configure(index, params)
        t_build = time.perf_counter() - t0
        local = LocalIndex(index, np.repeat(np.arange(n, dtype=np.int32), counts), counts, LocalConfig(), params)
        t0 = time.perf_counter()
        for q in queries:
            local.vote(q, 10)
        t_vote = (time.perf_counter() - t0) / len(queries)
        print(f"| {n:,} | {total:,} | {params['type']} | {t_build:.1f} | {t_vote:.3f} |", flush=True)


if __name__ == "__main__":
    main()
