"""``membership``: was this image, or this set of images, trained on? Calibrated membership inference.

The images (``--images``, or ``--set`` for dataset inference) and the reference (images of the same
distribution that were NOT trained on) are scored the same way by ``probes.mia`` (loss, SecMI, PIA). With
``difficulty="image-stats"`` (the default) each method's scores are then freed of what the images' own
statistics predict of them (``probes.difficulty``; one fit over the pooled images). Per method the reference
scores are the null: the threshold is the split-conformal order statistic at the target
false-positive rate (``matching.calibration.calibrate``) and each image gets the conformal p-value
(1 + #{null >= s}) / (N + 1). The shift control (``probes.shift``) asks whether the tested images can be told
from the reference without the model at all; when they can, a warning says the scores may measure that.
Nothing is fitted on labels: ``--labels`` only adds the evaluation (AUC and TPR at 1% and 0.1% FPR with
bootstrap intervals, and the flagged share of labelled members and non-members).
With ``--set`` the set is also tested as a whole (``probes.setinfer``, on the features of the asked methods: the
loss by default) and ``set.json`` written.

Outputs in ``out``: ``scores.csv`` (``path, score, p_value, is_member, raw_score`` for the verdict's method,
then ``score_<m>, p_<m>, flag_<m>, raw_<m>`` per further method, ``caption``, and with ``--labels`` the
``label``; ``raw`` is the score before difficulty calibration), ``reference.csv`` (the null's scores),
``features.npz`` (every scored method at every timestep and the image statistics, images and reference) and
``summary.json``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError, check_settings
from ..fsutil import DirLock, ensure_writable_dir, write_json, write_npz, write_text
from ..progress import ProgressCallback
from .difficulty import (DESCRIPTION, METHOD, MIN_IMAGES, MODES, calibrate_pooled, explained_share, fit_is_possible,
                         image_statistics)
from .images import ImageSet, load_images
from .journal import Journal, close_all, digest, model_stamp
from .mia import METHODS, ImageScores, score_images
from .shift import shift_control

M = DEFAULTS["membership"]
PROCESSING_SENSITIVE = ("secmi", "pia")  # features JPEG re-compression moves like membership (docs/results)


def membership(model_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
               images: str | os.PathLike[str] | None = None, set_source: str | os.PathLike[str] | None = None,
               reference: str | os.PathLike[str], method: str = M["method"], fpr: float = M["fpr"],
               timesteps: Optional[list[int]] = None, seeds: int = M["seeds"], captions: str | None = None,
               labels: str | os.PathLike[str] | None = None, batch: int = M["batch"], device: str = M["device"],
               difficulty: str = M["difficulty"], progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Score ``images`` (or ``set_source``, also tested as a set) against ``reference``; writes the files of
    the module docstring and returns the summary."""
    from ..models.adapter import load_model

    methods = _check_options(images, set_source, method, fpr, seeds, batch, difficulty, labels)
    model = load_model(model_path, device)
    tested = load_images(images if images is not None else set_source, model.image_size, captions=captions,
                         what="--images" if images is not None else "--set", progress=progress)
    ref = load_images(reference, model.image_size, captions=captions, what="--reference", progress=progress)
    ref, shared = _without_tested(tested, ref)
    _check_reference(len(ref), fpr, set_source is not None, shared)
    cond, ref_cond, conditioning = _conditioning(model, tested, ref, captions)
    truth = _read_labels(labels, tested.paths) if labels else None
    out_dir = ensure_writable_dir(out)
    with DirLock(out_dir, "membership folder"):
        t0 = time.perf_counter()
        kw = dict(timesteps=timesteps, seeds=seeds, batch=batch)
        stamp = model_stamp(model_path)
        journals = [Journal(out_dir, stage, digest(stamp, methods, kw, conditioning, s.captions, s.images))
                    for stage, s in (("images", tested), ("reference", ref))]
        main = score_images(model, tested.images, cond, methods, progress=progress, stage="images",
                            journal=journals[0], **kw)
        null = score_images(model, ref.images, ref_cond, methods, progress=progress, stage="reference",
                            journal=journals[1], **kw)
        stats = (image_statistics(tested.images), image_statistics(ref.images))
        scores, null_scores, cal = _difficulty(main, null, stats, difficulty)
        verdicts = {m: _verdict(scores[m], null_scores[m], fpr) for m in methods}
        _write_scores(out_dir, tested, methods, (scores, main.scores), verdicts, truth)
        _write_reference(out_dir, ref, methods, (null_scores, null.scores))
        _write_features(out_dir, main, null, stats)
        summary = _summary(model, model_path, methods, fpr, verdicts, tested, ref, main, conditioning,
                           time.perf_counter() - t0, timesteps, seeds)
        summary["difficulty"] = cal
        if "skipped" in cal:
            summary["warnings"].append(cal["skipped"])
        summary["shift"] = shift_control(tested.images, ref.images, progress)
        if summary["shift"].get("shift_detected"):
            summary["warnings"].insert(0, summary["shift"]["sentence"])
        if shared:
            summary["warnings"].insert(0, f"{shared} reference image{' is' if shared == 1 else 's are'} identical "
                                          "to tested images (at the model's resolution) and left out of the "
                                          "reference: the reference "
                                          "must hold images that were not trained on, and an image compared with "
                                          "itself hides whatever the model remembers of it")
            summary["reference_dropped_as_tested"] = shared
        if truth is not None:
            summary["evaluation"] = _evaluate(truth, scores, verdicts, methods)
        if set_source is not None:
            summary["set"] = _set_inference(out_dir, main, null, len(tested),
                                            stats if cal["method"] == METHOD else None, summary["shift"])
            sensitive = [m for m in methods if m in PROCESSING_SENSITIVE]
            if sensitive:
                summary["warnings"].append(
                    f"the set test sums {' and '.join(sensitive)} features "
                    "too: they also rise on images re-compressed as JPEG, so a set processed otherwise than the "
                    "reference can look trained on; --method loss (the default) is the robust choice")
        write_json(out_dir / "summary.json", summary)
        close_all(journals)
    return summary


def _difficulty(main: ImageScores, null: ImageScores, stats: tuple[np.ndarray, np.ndarray],
                mode: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Per method the tested and reference scores after difficulty calibration (``probes.difficulty``), and
    what was done (the summary's ``difficulty``)."""
    n = len(stats[0]) + len(stats[1])
    if mode == "none":
        return main.scores, null.scores, {"method": "none"}
    if not fit_is_possible(n):
        return main.scores, null.scores, {"method": "none", "skipped": (
            f"difficulty calibration not applied: {n} tested and reference images together, and the fit needs "
            f"{MIN_IMAGES} or more; the scores are the methods' own")}
    bad = [m for m in main.scores if not (np.isfinite(main.scores[m]).all() and np.isfinite(null.scores[m]).all())]
    if bad:
        return main.scores, null.scores, {"method": "none", "skipped": (
            f"difficulty calibration not applied: {', '.join(bad)} gave non-finite scores")}
    scores, null_scores, explained = {}, {}, {}
    for m in main.scores:
        scores[m], null_scores[m] = calibrate_pooled(main.scores[m], null.scores[m], *stats)
        explained[m] = round(explained_share(np.concatenate([main.scores[m], null.scores[m]]), np.vstack(stats)), 4)
    return scores, null_scores, {"method": METHOD, "description": DESCRIPTION, "explained_share": explained}


def _check_options(images: Any, set_source: Any, method: str, fpr: float, seeds: int, batch: int, difficulty: str,
                   labels: Any) -> list[str]:
    """The methods to run, once the options are known to be usable (else a one-line ``DiffrepError``)."""
    if (images is None) == (set_source is None):
        raise DiffrepError("give the images to test with --images (one verdict per image) or --set (the set as "
                           "a whole), not both")
    if method != "all" and method not in METHODS:
        raise DiffrepError(f"--method {method!r}: use {', '.join(METHODS)} or all")
    check_settings(fpr=fpr, seeds=seeds, batch=batch)
    if difficulty not in MODES:
        raise DiffrepError(f"--difficulty {difficulty!r}: use {' or '.join(MODES)}")
    if labels is not None and not os.path.isfile(labels):
        raise DiffrepError(f"--labels {labels} does not exist or is not a file. Check the path (a CSV with the "
                           "columns path and member).")
    return list(METHODS) if method == "all" else [method]


def _without_tested(tested: ImageSet, ref: ImageSet) -> tuple[ImageSet, int]:
    """``ref`` without the images identical to a tested one (same pixels at the model's resolution), and how
    many were left out."""
    seen = {hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in tested.images}
    keep = np.array([hashlib.blake2b(im.tobytes(), digest_size=16).digest() not in seen for im in ref.images], bool)
    dropped = int(len(keep) - keep.sum())
    return (ref.select(keep) if dropped else ref), dropped


def _check_reference(n: int, fpr: float, set_mode: bool, dropped: int = 0) -> None:
    from ..matching.calibration import min_null_size

    need = min_null_size(fpr)
    has = (f"has {n} image{'' if n == 1 else 's'}"
           + (f" once the {dropped} identical to tested images are left out" if dropped else ""))
    if not set_mode and n < need:
        raise DiffrepError(f"--reference {has}, too few to resolve --fpr {fpr:g}: a conformal threshold at "
                           f"that rate needs at least {need} reference (non-member) images. Give more, or a "
                           f"larger --fpr" + (f" (with {n} images the smallest is {1 / (n + 1):.3g})." if n else "."))
    if set_mode and n < 10:
        raise DiffrepError(f"--reference {has}: dataset inference compares the set with at least 10 "
                           "(better 100 or more) images of the same source that were not trained on")


def _conditioning(model: Any, tested: ImageSet, ref: ImageSet, captions: Optional[str]) -> tuple[Any, Any, str]:
    """The conditioning of both sets (one batch, a row per image; ``{}`` unconditional) and how the model was
    conditioned."""
    if not model.conditional:
        if captions:
            raise DiffrepError(f"{model.path} is an unconditional model: it takes no captions, drop --captions")
        return {}, {}, "unconditional"
    if captions:
        for what, s in (("--images/--set", tested), ("--reference", ref)):
            missing = [p for p, c in zip(s.paths, s.captions) if c is None]
            if missing:
                raise DiffrepError(f"{len(missing)} {what} images have no caption in {captions} (first: {missing[0]}); "
                                   "every image needs one, or drop --captions to score with the empty prompt")
        return _encode(model, tested.captions), _encode(model, ref.captions), "captions"
    if not model.has_unconditional:
        raise DiffrepError(f"{model.path} is conditional but was trained without caption dropout: give --captions "
                           "(one per image) so every image is scored under its own caption")
    return _encode(model, [""] * len(tested)), _encode(model, [""] * len(ref)), "empty prompt"


def _encode(model: Any, captions: list, batch: int = 256) -> Any:
    """``captions`` encoded as one conditioning batch (by the text encoder in chunks of ``batch``)."""
    from ..models.adapter import cat_cond

    return cat_cond([model.encode(list(captions[i:i + batch])) for i in range(0, len(captions), batch)])


def _verdict(scores: np.ndarray, null: np.ndarray, fpr: float) -> dict[str, Any]:
    from ..matching.calibration import calibrate

    cal = calibrate(reference=null, fpr=fpr, noun="image")
    return {"threshold": float(cal.threshold), "flags": cal.is_replica(scores), "p": cal.p_values(scores),
            "warnings": list(cal.warnings), "describe": cal.describe()}


def _read_labels(path: str | os.PathLike[str], paths: list[str]) -> np.ndarray:
    """Member (1) / non-member (0) per tested image from a CSV with ``path`` and ``member`` columns, matched by
    the full path or its longest tail the file names (the path relative to the source, or the file name); NaN
    for images the file lacks. A path labelled both ways is an error."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DiffrepError(f"--labels {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not rows or not {"path", "member"} <= set(rows[0]):
        raise DiffrepError(f"--labels {path}: needs a header with the columns path and member (1 = trained on)")
    table: dict[str, float] = {}
    for r in rows:
        v = (r["member"] or "").strip().lower()
        if v not in ("0", "1", "true", "false"):
            raise DiffrepError(f"--labels {path}: member must be 0 or 1 (got {r['member']!r} for {r['path']})")
        key, value = (r["path"] or "").strip("/"), float(v in ("1", "true"))
        if table.get(key, value) != value:
            raise DiffrepError(f"--labels {path}: {key} is labelled both member and non-member")
        table[key] = value
    out = np.full(len(paths), np.nan)
    for i, p in enumerate(paths):
        parts = p.strip("/").split("/")
        # the whole path, then its shorter tails at folder boundaries, down to the file name
        hit = next((table[t] for t in ("/".join(parts[k:]) for k in range(len(parts))) if t in table), None)
        out[i] = np.nan if hit is None else hit
    if np.isnan(out).all():
        raise DiffrepError(f"--labels {path}: no row matches a tested image (match by path or file name)")
    return out


def _evaluate(truth: np.ndarray, scores: dict[str, np.ndarray], verdicts: dict[str, Any],
              methods: list[str]) -> dict[str, Any]:
    from .roc import detection_metrics

    lab = ~np.isnan(truth)
    pos, neg = lab & (truth == 1), lab & (truth == 0)
    out: dict[str, Any] = {"labelled": int(lab.sum()), "members": int(pos.sum()), "non_members": int(neg.sum())}
    both = bool(pos.any() and neg.any())
    if not both:
        out["note"] = (f"AUC and TPR need labelled members and non-members; the labels give {out['members']} "
                       f"members and {out['non_members']} non-members among the tested images")
    for m in methods:
        met = (detection_metrics(scores[m][pos], scores[m][neg]) if both
               else {"positives": int(pos.sum()), "negatives": int(neg.sum())}
               | dict.fromkeys(("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "tpr_at_0.1pct_fpr",
                                "tpr_at_0.1pct_fpr_ci")))
        flags = verdicts[m]["flags"]
        met["members_flagged"] = float(flags[pos].mean()) if pos.any() else None
        met["non_members_flagged"] = float(flags[neg].mean()) if neg.any() else None
        out[m] = met
    return out


def _set_inference(out_dir: Path, main: ImageScores, null: ImageScores, n: int,
                   stats: Optional[tuple[np.ndarray, np.ndarray]], shift: dict[str, Any]) -> dict[str, Any]:
    """The set test (``probes.setinfer``; difficulty-calibrated when ``stats`` are given), written to set.json
    with the shift control's result."""
    from .setinfer import STATISTIC, STATISTIC_PLAIN, set_test

    keys = sorted(main.features)
    res = set_test(np.column_stack([main.features[k] for k in keys]), np.column_stack([null.features[k] for k in keys]),
                   set_stats=None if stats is None else stats[0], ref_stats=None if stats is None else stats[1])
    alpha = 0.01
    decision = "trained on" if res["p_value"] < alpha else "not shown to be trained on"
    if shift.get("shift_detected"):
        decision = "inconclusive: the set differs from the reference without the model"
    body = {"p_value": res["p_value"], "n_images": n, "reference_images": len(null.scores[next(iter(null.scores))]),
            "decision": decision,
            "alpha": alpha, "statistic": STATISTIC if stats is not None else STATISTIC_PLAIN, "statistic_value": res["statistic"], "features": keys,
            "permutations": res["permutations"], "subsets": res["subsets"],
            "smallest_set_for_alpha": res["smallest_set_for_alpha"],
            "shift_control": {k: shift[k] for k in ("auc", "p_value", "shift_detected", "skipped") if k in shift}}
    body["sentence"] = _sentence(body)
    write_json(out_dir / "set.json", body)
    return {k: body[k] for k in ("p_value", "decision", "smallest_set_for_alpha", "sentence")}


def _sentence(s: dict[str, Any]) -> str:
    """The set result in words a rights holder can act on."""
    one = s["n_images"] == 1
    them, it, they = ("this image", "it", "it") if one else (f"these {s['n_images']} images", "them", "they")
    if s["shift_control"].get("shift_detected"):
        return (f"Inconclusive: {them} can be told from the reference images without the model (blind classifier "
                f"AUC {s['shift_control']['auc']:.2f}), so the model's different treatment of {it} (p = "
                f"{s['p_value']:.2g}) may come from that difference, not from training. Test again against a "
                f"reference from the same source as {them}, processed the same way.")
    if s["p_value"] < s["alpha"]:
        need = s["smallest_set_for_alpha"]
        tail = (f" About {need} of these images were enough for p < {s['alpha']:g}." if need else "")
        like = "like a training image" if one else "like training images"
        return (f"The model treats {them} {like}: if it had not been trained on {it}, a difference this large "
                f"would occur with probability {s['p_value']:.2g} or less." + tail)
    return (f"No evidence that {them} {'was' if one else 'were'} trained on (p = {s['p_value']:.2g} against "
            f"{s['reference_images']} images known not to be): the model does not treat {it} differently. This "
            f"does not prove {they} {'was' if one else 'were'} not used; more images, or a model that fits its data "
            "less loosely, may be needed to tell.")


def _summary(model: Any, model_path: Any, methods: list[str], fpr: float, verdicts: dict[str, Any], tested: ImageSet,
             ref: ImageSet, main: ImageScores, conditioning: str, seconds: float, timesteps: Any,
             seeds: int) -> dict[str, Any]:
    from .mia import timesteps_for

    v = verdicts[methods[0]]
    notes = list(v["warnings"])
    resized = tested.resized + ref.resized
    if resized:
        notes.append(f"{resized} image{' was' if resized == 1 else 's were'} not {model.image_size} px and "
                     f"{'was' if resized == 1 else 'were'} center-cropped and resized to the model's resolution")
    skipped = tested.skipped + ref.skipped
    if skipped:
        n = len(skipped)
        notes.append(f"{n} file{' was' if n == 1 else 's were'} not readable and skipped (see skipped in "
                     "summary.json)")
    return {"model": str(model_path), "model_kind": model.kind, "method": methods[0], "methods": methods,
            "threshold": v["threshold"], "threshold_source": "reference", "target_fpr": fpr,
            "images": len(tested), "flagged": int(np.sum(v["flags"])), "reference_images": len(ref),
            "calibration": v["describe"], "conditioning": conditioning, "seeds": seeds,
            "timesteps": {m: list(timesteps_for(m, timesteps, model.train_steps)) for m in main.scores},
            "seconds": round(seconds, 3),
            "seconds_per_image": {m: round(s / max(1, len(tested)), 5) for m, s in main.seconds.items()},
            "model_calls_per_image": main.model_calls,
            "other_methods": {m: {"threshold": verdicts[m]["threshold"], "flagged": int(np.sum(verdicts[m]["flags"]))}
                              for m in methods[1:]},
            "skipped": [{"path": p, "reason": r} for p, r in skipped], "warnings": notes}


def _write_scores(out: Path, s: ImageSet, methods: list[str], scores: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
                  verdicts: dict[str, Any], truth: Optional[np.ndarray]) -> None:
    """scores.csv; ``scores`` holds the (calibrated, raw) scores per method."""
    cal, raw = scores
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["path", "score", "p_value", "is_member", "raw_score"]
    for m in methods[1:]:
        head += [f"score_{m}", f"p_{m}", f"flag_{m}", f"raw_{m}"]
    w.writerow(head + ["caption"] + (["label"] if truth is not None else []))
    v0, m0 = verdicts[methods[0]], methods[0]
    for i, p in enumerate(s.paths):
        row = [p, _num(cal[m0][i]), _num(v0["p"][i]), bool(v0["flags"][i]), _num(raw[m0][i])]
        for m in methods[1:]:
            row += [_num(cal[m][i]), _num(verdicts[m]["p"][i]), bool(verdicts[m]["flags"][i]), _num(raw[m][i])]
        lab = [] if truth is None else ["" if np.isnan(truth[i]) else int(truth[i])]
        w.writerow(row + [s.captions[i] or ""] + lab)
    write_text(out / "scores.csv", buf.getvalue())


def _write_reference(out: Path, s: ImageSet, methods: list[str],
                     scores: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> None:
    """reference.csv: the null's (calibrated, raw) scores per method."""
    cal, raw = scores
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path"] + [f"score_{m}" for m in methods] + [f"raw_{m}" for m in methods])
    for i, p in enumerate(s.paths):
        w.writerow([p] + [_num(cal[m][i]) for m in methods] + [_num(raw[m][i]) for m in methods])
    write_text(out / "reference.csv", buf.getvalue())


def _write_features(out: Path, main: ImageScores, null: ImageScores, stats: tuple[np.ndarray, np.ndarray]) -> None:
    """``features.npz``: every feature of the tested (``images/F``) and reference (``reference/F``) images, and
    their image statistics (``statistics/images``, ``statistics/reference``; ``difficulty.image_statistics``)."""
    arrays = ({f"images/{k}": v for k, v in main.features.items()}
              | {f"reference/{k}": v for k, v in null.features.items()}
              | {"statistics/images": stats[0], "statistics/reference": stats[1]})
    write_npz(out / "features.npz", arrays)


def _num(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.6g}"
