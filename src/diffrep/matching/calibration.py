"""What a replica verdict means: thresholds at a target false-positive rate, and empirical p-values.

A verdict is the claim "this generation is closer to a training image than real, unseen images usually
are". The null distribution is, in order of preference:

1. ``reference``: top-1 scores of held-out real images (never trained on) against the training index
   (``reference+training``: pooled with training images scored against the other training images, when the
   audit's reference set is too small to resolve the target rate; ``auditing.run.audit(pool_null=...)``);
2. ``background``: train-vs-train second-nearest-neighbour scores (Somepalli et al. 2023's background,
   as in somepago/DCR ``diff_retrieval.py``; the nearest neighbour is the image itself);
3. ``fixed``: the paper's 0.5 for SSCD descriptors, labelled as uncalibrated;
and ``--threshold`` overrides all of them (``explicit``).

Threshold rule (split-conformal, Vovk et al. 2005; Angelopoulos & Bates 2021): with null scores
n_1 >= ... >= n_N and target FPR a, the threshold is n_(m+1) with m = floor(a*(N+1)) - 1, and a score is a
replica when it is strictly greater. A replica then has p-value (1 + #{n_i >= s}) / (N + 1) <= a, the
standard conservative permutation p-value, so a *new* image exchangeable with the null is flagged with
probability <= a (averaged over null draws), not only the null images themselves. (The plain empirical
quantile, m = floor(a*N), lets (m+1)/(N+1) through: 1.33% instead of 1% with 300 reference images.)
With N + 1 < 1/a no score can reach p <= a: the threshold is then the largest null score, with a warning.

That guarantee is on average over null draws. For the one null a user has, the false-positive rate the
threshold achieves is random: with k of N exchangeable (continuous) null scores above the threshold it is at
most Beta(k + 1, N - k) distributed (the (k+1)-th largest of N uniforms), so a small null can give a rate well
above the target. ``Calibration.describe`` reports its mean and 95% upper bound (:func:`fpr_upper_bound`) and
from how many null images on that bound stays under twice the target (:func:`null_size_for`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import CalibrationError

PAPER_SSCD_THRESHOLD = 0.5
BOUND_CONFIDENCE = 0.95  # confidence of the achieved-FPR upper bound reported with every calibration


@dataclass
class Calibration:
    threshold: float
    source: str  # "reference" | "background" | "explicit" | "fixed"
    target_fpr: float | None
    null: np.ndarray  # sorted ascending null scores (empty for explicit/fixed without a null)
    null_fpr: float | None = None  # empirical FPR of the threshold on the null
    warnings: list[str] = field(default_factory=list)
    parts: dict[str, int] = field(default_factory=dict)  # what the null is made of, when pooled

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        return empirical_p_values(self.null, scores)

    def is_replica(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def describe(self) -> dict[str, Any]:
        return {
            "threshold": float(self.threshold), "source": self.source, "target_fpr": self.target_fpr,
            "null_size": int(len(self.null)),
            **({"null_parts": dict(self.parts)} if self.parts else {}),
            "null_fpr_at_threshold": None if self.null_fpr is None else float(self.null_fpr),
            "achieved_fpr": self.achieved_fpr(),
            "warnings": list(self.warnings),
        }

    def achieved_fpr(self, confidence: float = BOUND_CONFIDENCE) -> Optional[dict[str, Any]]:
        """What this null says about the rate at which unrelated images pass the threshold: at most ``mean``
        on average over null draws, at most ``upper`` with ``confidence`` for this null; and, for a target
        rate, from how many null images on ``upper`` stays under twice the target. None without a null."""
        n = len(self.null)
        if n == 0:
            return None
        k = int(np.sum(self.null > self.threshold))
        return {"mean_at_most": round((k + 1) / (n + 1), 6), "upper": round(fpr_upper_bound(n, k, confidence), 6),
                "confidence": confidence,
                "null_size_for_twice_target": None if self.target_fpr is None else null_size_for(self.target_fpr),
                "meaning": "the share of unrelated images expected above the threshold is at most mean_at_most on "
                           "average over null draws, and at most upper (with this confidence) for this null; "
                           "from null_size_for_twice_target null images on, upper stays under twice the target"}


def fpr_upper_bound(n: int, k: int, confidence: float = BOUND_CONFIDENCE) -> float:
    """The ``confidence`` quantile of Beta(k + 1, n - k): an upper bound, for this null, on the rate at which a
    new exchangeable score exceeds a threshold that ``k`` of ``n`` null scores exceed (module docstring)."""
    a, b = k + 1, n - k
    if b <= 0:
        return 1.0
    m = a + b - 1

    def cdf(x: float) -> float:  # P(Beta(a, b) <= x) = P(Binomial(a + b - 1, x) >= a)
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return 1.0
        lx, l1x = math.log(x), math.log1p(-x)
        below = sum(math.exp(math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1) + j * lx + (m - j) * l1x)
                    for j in range(a))
        return 1.0 - below

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < confidence else (lo, mid)
    return hi


def null_size_for(fpr: float, factor: float = 2.0, confidence: float = BOUND_CONFIDENCE,
                  limit: int = 1_000_000) -> Optional[int]:
    """The smallest null size from which on every null's conformal threshold at ``fpr`` (k = floor(fpr (N + 1))
    - 1 null scores above it, at least 0) keeps :func:`fpr_upper_bound` <= ``factor * fpr``. The bound is a
    saw-tooth in N: it falls while k stays and jumps up where k grows, the jumps shrinking, so the answer is
    the first N after which no jump reaches the target."""
    target = factor * fpr

    def first_n(k: int) -> int:  # the smallest N whose threshold leaves k null scores above it
        return 1 if k == 0 else max(1, math.ceil((k + 1) / fpr - 1 - 1e-9))

    k = 0
    while first_n(k) <= limit:
        if fpr_upper_bound(first_n(k), k, confidence) <= target:  # from here on every jump stays under
            if k == 0:
                return first_n(0)
            lo, hi = first_n(k - 1), first_n(k) - 1  # the tail of the previous tooth may already be under
            if fpr_upper_bound(hi, k - 1, confidence) > target:
                return first_n(k)
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fpr_upper_bound(mid, k - 1, confidence) <= target else (mid + 1, hi)
            return lo
        k += 1
    return None


def min_null_size(fpr: float) -> int:
    """The fewest null scores that resolve a false-positive rate of ``fpr`` (floor(fpr (N + 1)) >= 1)."""
    return int(np.ceil(1 / fpr)) - 1


def threshold_at_fpr(null: np.ndarray, fpr: float, noun: str = "image") -> tuple[float, list[str]]:
    """The order statistic t of ``null`` such that a score s > t has conformal p-value <= ``fpr``
    (at most floor(fpr*(N+1)) - 1 null scores >= s); the largest null score when N is too small. ``noun``
    names what was scored, in the warnings."""
    if not 0 < fpr < 1:
        raise CalibrationError(f"target false-positive rate must be between 0 and 1, got {fpr}")
    null = np.sort(np.asarray(null, np.float64))[::-1]
    n = len(null)
    if n == 0:
        raise CalibrationError("cannot calibrate a threshold from an empty null distribution; "
                               "give --reference images or an explicit --threshold")
    warnings = []
    m = int(np.floor(fpr * (n + 1) + 1e-9)) - 1
    if m < 0:
        warnings.append(f"{n} null scores cannot resolve a false-positive rate of {fpr:g} (need at least "
                        f"{min_null_size(fpr)}); the threshold is the largest null score, so the "
                        f"achieved rate on the null is 0 but a new unrelated {noun} exceeds it with "
                        f"probability up to 1/(N+1) = {1 / (n + 1):.3g}. Give more reference {noun}s.")
        m = 0
    return float(null[m]) if m < n else float(null[-1]), warnings


def empirical_p_values(null: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{null >= s}) / (N + 1) per score; NaN when there is no null."""
    scores = np.asarray(scores, np.float64)
    null = np.sort(np.asarray(null, np.float64))
    if len(null) == 0:
        return np.full(scores.shape, np.nan)
    ge = len(null) - np.searchsorted(null, scores, side="left")
    return (1.0 + ge) / (len(null) + 1.0)


def calibrate(*, reference: np.ndarray | None = None, background: np.ndarray | None = None,
              fpr: float = 0.01, threshold: float | None = None, descriptor_name: str = "",
              min_null: int = 20, noun: str = "image") -> Calibration:
    """Choose the threshold by the preference order in the module docstring (``noun``: what was scored, in
    the warnings)."""
    if reference is not None and len(reference):
        null, source = np.sort(np.asarray(reference, np.float64)), "reference"
    elif background is not None and len(background) >= min_null:
        null, source = np.sort(np.asarray(background, np.float64)), "background"
    else:
        null, source = np.zeros(0), ""
    warnings: list[str] = []
    if threshold is not None:
        t = float(threshold)
        cal = Calibration(t, "explicit", None, null)
    elif source:
        t, warnings = threshold_at_fpr(null, fpr, noun)
        cal = Calibration(t, source, fpr, null)
    elif descriptor_name.startswith("sscd"):
        cal = Calibration(PAPER_SSCD_THRESHOLD, "fixed", None, null)
        warnings.append("no reference images and too few training images for a background: using the "
                        "paper's fixed SSCD threshold 0.5, which is NOT calibrated (on low-resolution or "
                        "single-domain data unrelated images often exceed it). Give --reference.")
    else:
        raise CalibrationError(f"cannot calibrate {descriptor_name!r} scores: give --reference images, "
                               f"index at least {min_null} training images, or set --threshold.")
    if len(null):
        cal.null_fpr = float(np.mean(null > cal.threshold))
    cal.warnings = warnings
    bound = cal.achieved_fpr()
    need = None if bound is None else bound["null_size_for_twice_target"]
    if cal.target_fpr is not None and bound is not None and bound["upper"] > 2 * cal.target_fpr \
            and (need is None or len(null) < need):
        what = f"held-out reference {noun}s" if source == "reference" else "reference images (--reference)"
        cal.warnings.append(
            f"with {len(null)} null scores the threshold lets unrelated {noun}s through at up to "
            f"{100 * bound['upper']:.1f}% (95% bound; {100 * bound['mean_at_most']:.1f}% on average) for a "
            f"{100 * cal.target_fpr:g}% target" + (f"; with {need} or more {what} that bound stays under "
                                                  f"{200 * cal.target_fpr:g}%" if need else ""))
    return cal


TAIL_SHARE, TAIL_MIN = 0.1, 5  # the exponential tail is fitted to the top 10% of a channel's null (>= 5)


def tail_p_values(null_sorted: np.ndarray, scores: np.ndarray, n_total: int) -> np.ndarray:
    """One channel's p-values with a smooth upper tail: (1 + #{null >= s}) / (n_total + 1) up to the k-th
    largest null score u (k = 10% of the null, at least 5), and above it the exponential tail
    (1 + k) / (n_total + 1) * exp(-(s - u) / beta), beta = the mean excess of the top k over u (the
    maximum-likelihood exponential / peaks-over-threshold fit). Scores beyond every null score thus keep
    their order (a copy far above the null gets a far smaller p than one just above it) instead of all
    tying at 1 / (n_total + 1)."""
    m = len(null_sorted)
    s = np.asarray(scores, np.float64)
    ge = m - np.searchsorted(null_sorted, s, side="left")
    p = (1.0 + ge) / (n_total + 1.0)
    if m == 0:
        return p
    k = min(m, max(TAIL_MIN, int(np.ceil(TAIL_SHARE * m))))
    u = null_sorted[m - k]
    beta = float(np.mean(null_sorted[m - k:] - u))
    if beta <= 0:
        return p
    above = s > u
    p[above] = (1.0 + k) / (n_total + 1.0) * np.exp(-(s[above] - u) / beta)
    return p


def channel_p_values(null: np.ndarray, scores: np.ndarray, saturating: bool = False) -> np.ndarray:
    """One channel's p-values for queries as :func:`fuse_channels` computes them: :func:`tail_p_values`
    against the whole null (on :func:`saturating_scale` for a saturating channel). Used to order a query's
    candidates by their strongest channel with the same p-values that decide the verdict."""
    null, scores = np.asarray(null, np.float64), np.asarray(scores, np.float64)
    if saturating:
        null, scores = saturating_scale(null), saturating_scale(scores)
    return tail_p_values(np.sort(null), scores, len(null))


def _loo_tail_p_values(null: np.ndarray) -> np.ndarray:
    """Each null item's :func:`tail_p_values` against the *other* items, on the (n + 1) scale."""
    n = len(null)
    srt = np.sort(null)
    k = min(n - 1, max(TAIL_MIN, int(np.ceil(TAIL_SHARE * (n - 1)))))
    p = np.empty(n)
    # items below the top k + 1 sit under the tail of the others: (1 + others >= s) / (n + 1), and
    # searchsorted's count includes the item itself
    top = np.argsort(null, kind="stable")[max(0, n - (k + 1)):]
    p[:] = (n - np.searchsorted(srt, null, side="left")) / (n + 1.0)
    for i in top:
        others = np.delete(srt, np.searchsorted(srt, null[i], side="left"))
        p[i] = tail_p_values(others, np.array([null[i]]), n)[0]
    return p


AGREE = 2  # channels whose p-values the fused score combines: the strongest two must agree


def saturating_scale(x: np.ndarray) -> np.ndarray:
    """-log(1 - s) for scores that end at 1 (a correlation or R^2 that a pixel-exact copy saturates): rank
    p-values do not change, but the exponential tail is fitted where it fits (see :func:`fuse_channels`)."""
    return -np.log(np.clip(1.0 - np.asarray(x, np.float64), 1e-6, None))


def fuse_channels(null_channels: list[np.ndarray], channels: list[np.ndarray], agree: int = AGREE,
                  alone: tuple[int, ...] = (), saturating: tuple[int, ...] = (),
                  void: Optional[dict[int, tuple[np.ndarray, np.ndarray]]] = None,
                  alone_floor: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Fuse several scores into one: 1 - the geometric mean of the ``agree`` smallest channel p-values
    (``agree=1`` is Tippett's min-p rule); channels listed in ``alone`` (indices) may decide on their own:
    1 - min(that geometric mean over the other channels, their own p-values), but only where their score is
    at least ``alone_floor`` (below it their p-value is 1: an R^2 or correlation of 0.15 says nothing about a
    copy however far the null's tail lies below it). ``void[c] = (null mask, query mask)``: items whose
    channel-c evidence does not count get p = 1 there (``specificity.py``); the tail is still fitted to the
    whole channel, so the rule is a fixed function of the scores, applied to null and queries alike.

    ``null_channels[c][i]`` is channel c of null item i (paired across channels); ``channels[c][j]`` the
    same for query j. Per channel a query's p-value is :func:`tail_p_values` against the whole null, a
    null item's the same against the null *without itself* (leave-one-out), both on the (N + 1) scale of
    the null plus one query, so null and queries are treated alike and the fused null is a conformal null
    for ``threshold_at_fpr`` / ``empirical_p_values``: the target false-positive rate holds whatever the
    rule (tests/test_verify.py checks it on fresh null draws).

    Why two channels: a look-alike (an unseen emoji drawn with a training emoji's head) fools the SSCD
    cosine and the edge score (the shared part aligns and its edges correlate) but rarely both at once,
    while a copy moves both. The audit passes the pixel-level channels in ``alone`` (the blurred-pixel
    score and, with ``--partial``, the object score): they compare the whole content's intensities at one
    alignment, look-alikes do not reach their tails, and on small noisy generations (32 px diffusion
    samples) they are the only channels that see a copy. On the demo scenario's tuning seed 0 (1% FPR)
    min-p found 89.0% of the copies with their source at 1.5% unseen flagged, this rule 93.5% at 2.0%;
    on the 100-image diffusion model of docs/experiments.md it flags 23.1% of 1,000 generations where
    requiring two of all three channels flagged 11.2% (pixel distance: 28.1%).
    Why smooth tails: with plain empirical p-values every channel's maximum ties at 1 / (N + 1), and with
    several channels and a few hundred reference images the fused null's top 1% is all ties, so nothing can
    pass a 1% threshold honestly (the earlier rule gave null items the denominator N and so let queries
    through at 1.3% instead of 1%).
    Channels in ``saturating`` (the audit passes the pixel and object scores) get their tail on
    -log(1 - s) (:func:`saturating_scale`): their copies pile up at 1, and on a null spread over [0.5, 0.96]
    (clip art on white) an exponential tail on s itself gave a pixel-exact copy p ~ 0.0075, *above* the
    1 / (N + 1) = 0.0022 its rank gives, so whole-image copies at pixel 0.9999 were not flagged
    (docs/partial.md). Returns (fused null, fused queries), both in [0, 1], larger = more replica-like."""
    n = len(null_channels[0])
    if n == 0:
        return np.zeros(0), np.full(len(channels[0]), np.nan)
    raw_null = list(null_channels)
    with np.errstate(divide="ignore"):  # a tail p-value far beyond the null underflows to 0: log p = -inf, fused 1
        log_q = np.array([np.log(channel_p_values(null, x, c in saturating))
                          for c, (null, x) in enumerate(zip(null_channels, channels))])
        if saturating:
            null_channels = [saturating_scale(x) if c in saturating else x for c, x in enumerate(null_channels)]
        log_n = np.array([np.log(_loo_tail_p_values(np.asarray(null, np.float64))) for null in null_channels])
    for c, (null_void, query_void) in (void or {}).items():
        log_n[c, np.asarray(null_void, bool)] = 0.0
        log_q[c, np.asarray(query_void, bool)] = 0.0
    for c in alone:  # the raw scores: null_channels may be on the saturating scale by now
        log_n[c, ~(np.nan_to_num(np.asarray(raw_null[c], np.float64), nan=-np.inf) >= alone_floor)] = 0.0
        log_q[c, ~(np.nan_to_num(np.asarray(channels[c], np.float64), nan=-np.inf) >= alone_floor)] = 0.0
    group = [c for c in range(len(channels)) if c not in alone]
    m = max(1, min(agree, len(group)))

    def fused(logs: np.ndarray) -> np.ndarray:
        log_p = np.sort(logs[group], axis=0)[:m].mean(axis=0) if group else np.zeros(logs.shape[1])
        for c in alone:
            log_p = np.minimum(log_p, logs[c])
        return 1.0 - np.exp(log_p)

    return fused(log_n), fused(log_q)
