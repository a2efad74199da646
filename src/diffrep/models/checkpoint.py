"""Run directories: ``config.json`` and the resumable ``checkpoint.pt``.

A checkpoint holds everything needed to continue bit-for-bit: the model and EMA weights, the optimizer
state, the step, the state of the training generator (batch indices, noise, timesteps) and of torch's
global RNG, the conditioning vocabulary and the loss log. It is written atomically (temporary file,
fsync, rename), so a kill during the write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any, Optional

from ..errors import DiffrepError, brief
from ..fsutil import atomic_path, write_json

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
FORMAT = 1
# Options that define a run: resuming with any of them changed would silently train something else.
RUN_KEYS = ("data", "captions", "cond", "subset", "dup_frac", "dup_weight", "batch", "lr", "ema", "seed",
            "size", "color", "model", "uncond_p")
LEGACY = {"uncond_p": 0.0}  # what a run written before an option existed used


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    import torch

    path = run_dir / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(run_dir: str | Path, *, what: str = "run") -> dict[str, Any]:
    """The checkpoint of ``run_dir`` on the CPU; DiffrepError when it is missing or unreadable."""
    import torch

    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise DiffrepError(f"{run_dir} has no {CHECKPOINT}: not a {what} directory written by `diffrep train` "
                           "(or training stopped before its first checkpoint).")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before refusing them; the refusal says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        # an unpickling refusal's text suggests loading without weights_only, which would run the file's code
        why = ("it holds more than tensors and numbers" if isinstance(exc, pickle.UnpicklingError)
               else f"{type(exc).__name__}: {brief(exc)}")
        raise DiffrepError(f"cannot read {path} ({why}); it is damaged or from another program. Delete it to "
                           "train from scratch.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DiffrepError(f"{path} has checkpoint format {ckpt.get('format') if isinstance(ckpt, dict) else '?'}, "
                           f"this diffrep reads format {FORMAT}; train again into a new --out folder.")
    return ckpt


def check_resumable(run_dir: Path, saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to continue a run with different defining options (the step count may grow)."""
    diff = [k for k in RUN_KEYS if _norm(saved.get(k, LEGACY.get(k))) != _norm(new.get(k, LEGACY.get(k)))]
    if diff:
        if len(diff) > 1 and "model" in diff:  # the architecture follows from the other options
            diff.remove("model")
        detail = "; ".join("model: a different architecture or caption vocabulary" if k == "model"
                           else f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise DiffrepError(f"{run_dir} holds a run trained with other options ({detail}). Re-run the original "
                           "command to continue it, or choose a new --out folder.")


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v))  # tuples -> lists, so JSON round trips compare equal


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_json(run_dir / CONFIG, config)


def read_config(run_dir: str | Path) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_log_csv(run_dir: Path, log: list[dict[str, Any]]) -> None:
    from ..fsutil import write_text

    wen = any("wen_dropped" in r for r in log)  # --mitigate wen-filter: share left out, mean noise norm
    lines = ["step,loss,steps_per_s" + (",wen_dropped,noise_norm" if wen else "")] + [
        f"{r['step']},{r['loss']:.6f},{r['steps_per_s']:.3f}"
        + (f",{r.get('wen_dropped', float('nan')):.4f},{r.get('noise_norm', float('nan')):.4f}" if wen else "")
        for r in log]
    write_text(run_dir / "log.csv", "\n".join(lines) + "\n")
