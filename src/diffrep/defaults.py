"""Every user-facing default, defined once: library functions take their defaults from here and the CLI reads
the same values for its flags and help texts (torch-fidelity's ``DEFAULTS`` pattern). Plain values only, so
``diffrep --help`` stays instant."""
from __future__ import annotations

from typing import Any

POOL_NULL_MODES = ("auto", "always", "never")  # audit --pool-null

DEFAULTS: dict[str, dict[str, Any]] = {
    "decode": {
        "max_pixels": 250_000_000,  # images with more pixels are skipped (checked from the header)
    },
    "index": {
        "descriptor": "sscd",
        "index_type": "flat",  # exact search
        "chunk_size": 1024,  # images per committed chunk: at most this much work is redone after a crash
    },
    "audit": {
        "fpr": 0.01,  # target false-positive rate of the verdict
        "top_k": 5,  # training matches listed per generation
        "verify_k": 3,  # candidates verified pixel-wise and re-ranked
        "partial_k": 10,  # --partial: region candidates per generation
        "local_k": 10,  # --partial: more candidates from local features (0: off)
        "specificity_margin": 0.1,  # --partial: cosine margin over distinct training candidates
        "seed": 0,  # background sampling
        "background_sample": 10_000,  # training images in the train-vs-train background
        "verify_background_sample": 1000,  # ... in the verified train-vs-train null (no --reference)
        "partial_background_sample": 300,  # ... in the --partial train-vs-train null
        "copy_like": 0.98,  # a pixel-level score this high reproduces a training image's pixels
        "look_alike": 0.75,  # an SSCD cosine this high is a copy by SSCD's own published threshold
        "pool_null": "never",  # add the training set's leave-one-out null to a small reference null (auto|always|never)
        "alone_floor": 0.5,  # a pixel-level score (R^2, correlation) decides alone only from this level on
    },
    "report": {
        "page_limit": 200,  # replicas shown in report.html (all are in matches.csv)
        "borderline": 48,  # strongest non-replicas shown
        "thumb": 112,  # thumbnail side in px
    },
    "dedup": {
        "mode": "verified",
        "k": 10,  # neighbours examined per image
        "candidate_floor": 0.5,  # SSCD cosine below which a neighbour is not a candidate
        "verified_threshold": 0.95,  # verified score that links two images
        "global_threshold": 0.95,  # SSCD cosine that links two images where there is no pixel evidence
        "pixel_threshold": 0.94,  # blurred-intensity correlation that links two images
        "nprobe": 8,  # IVF cells probed by the candidate search on an approximate index
        "eps": 0.05,  # semdedup: duplicates have cosine > 1 - eps
    },
    "engine": {  # --engine ray (index and audit)
        "address": "local",  # a Ray instance started for the run; auto or HOST:PORT for a running cluster
        "num_workers": 2,  # embedding actors, and tasks in flight for the audit's per-candidate stages
    },
    "train": {
        "cond": "none", "dup_frac": 0.0, "dup_weight": 5.0, "steps": 5000, "batch": 16, "lr": 2e-3, "ema": 0.999,
        "seed": 0, "device": "cpu", "size": 32, "sample_every": 1000, "checkpoint_every": 500, "mitigate_p": 0.1,
        "uncond_p": 0.1,  # --cond caption: share of samples trained on the empty caption (classifier-free guidance)
    },
    "sample": {
        "sampler": "ddim", "steps": 50, "seed": 0, "batch": 64, "device": "cpu",
        "guidance": 1.0,  # classifier-free guidance scale; 1 = the plain conditional prediction
    },
    "probe": {
        "method": "noise-norm", "fpr": 0.01, "seeds": 4, "steps": 1, "sample_steps": 50, "guidance": 1.0,
        "batch": 32, "device": "cpu",
    },
    "mitigate": {  # --mitigate-strength per inference-time mitigation (mitigation/)
        "gni": 0.1,  # lambda of the Gaussian noise on the prompt embedding (Somepalli et al.)
        "rt": 2, "cwr": 2, "rna": 2,  # random tokens / repeated caption words / random numbers inserted
        "wen": 0.0,  # target noise-norm; the embedding is optimized until it is reached or for 10 iterations
        "attn-rescale": 1.25,  # factor on the beginning token's cross-attention logit
    },
    "membership": {
        "method": "loss", "fpr": 0.01, "seeds": 2, "batch": 64, "device": "cpu",
        "difficulty": "image-stats",  # probes.difficulty: scores freed of what the image's own statistics predict
    },
    "extract": {
        "per_prompt": 16, "min_clique": 3, "fpr": 0.01, "keep": 0.1, "sample_steps": 50, "guidance": 1.0,
        "min_share": 0.5,  # list a clique only when it holds more than this share of a prompt's generations
        "prefilter": "noise-norm",  # generate only for the prompts the calibrated noise-norm probe flags
        "prefilter_fpr": None,  # the noise-norm prefilter's false-positive rate; None: extract's fpr
        "drop_reference_copies": True,  # reference prompts whose clique the audit flags are left out of the edge
        "device": "cpu",
        "excess_alpha": 0.05,  # warn when more cliques fail the audit than the edge's rate explains at this level
    },
    "experiment": {
        "preset": "smoke", "device": "cpu", "seed": 0, "fpr": 0.01, "dup_frac": 0.05, "dup_weight": 5.0,
    },
    "bench": {
        "kinds": "segmix,segmix-hard,diagonal,patch,edits", "n": 1000, "seed": 0, "fill": "image",
        "descriptors": "sscd,sscd-fast,effnet-lite0,pdq,phash,pixel", "k": 10,
    },
}
