"""Sampling a trained run: PNGs plus ``prompts.jsonl``, ready for ``diffrep audit``.

``sample`` rebuilds the model from ``checkpoint.pt`` and uses its EMA weights. DDIM (deterministic,
eta 0) with 50 steps is the default; ``ddpm`` is the ancestral sampler (``--steps 1000`` is the full
chain). Each output image gets one line in ``prompts.jsonl``: ``{"file", "caption"}`` for caption models,
``{"file", "class", "caption"}`` for class models (the caption is the class's shared training caption
or its name), ``{"file"}`` for unconditional ones; ``diffrep audit --captions OUT/prompts.jsonl`` reads it.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError, OutputError, SourceError, check_settings
from ..fsutil import DirLock, ensure_writable_dir, parse_json, printable, write_bytes, write_text
from ..progress import ProgressCallback, emit

SAMPLERS = ("ddim", "ddpm")
_PROMPT_KEYS = ("caption", "prompt", "text", "class")

S = DEFAULTS["sample"]


SAMPLE_MARK = ".diffrep-sample"  # marks a folder `diffrep sample` writes
_SAMPLE_NAME = re.compile(r"[0-9]{5,}\.png")


@dataclass
class SampleResult:
    out: Path
    files: list[str]
    step: int  # training step of the weights used
    seconds: float
    unknown_words: list[str] = field(default_factory=list)


class SamplingPlan:
    """Hooks through which a sampling-time change (an inference-time mitigation, ``mitigation/``) acts on
    ``generate``; this base class changes nothing. ``prompts`` edits the prompt texts, ``condition`` the
    encoded conditioning at the starting noise, ``eps`` the noise prediction of each step, ``context`` wraps
    the whole loop (e.g. swapping attention processors), ``records`` returns per-image facts for
    ``prompts.jsonl``; ``bind`` refuses a model the plan cannot act on."""

    name = "none"

    def bind(self, model: Any, guidance: float) -> None:
        """Check that the plan applies to ``model`` at ``guidance`` (DiffrepError with the reason if not)."""

    def prompts(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        return texts

    def condition(self, model: Any, x: Any, t: Any, cond: Any, uncond: Any) -> Any:
        """The conditioning to sample with, given the starting noise ``x`` at the first timestep ``t``."""
        return cond

    def eps(self, model: Any, x: Any, t: Any, step: int, cond: Any, uncond: Any, guidance: float) -> Any:
        return model.guided(x, t, cond, uncond, guidance)

    def needs_uncond(self) -> bool:
        return False

    def context(self, model: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def records(self, n: int) -> list[dict[str, Any]]:
        return [{} for _ in range(n)]


def generate(model: Any, prompts: Sequence[str], n: int, *, sampler: str, steps: int, generator: Any,
             guidance: float = 1.0, plan: Optional[SamplingPlan] = None) -> np.ndarray:
    """``n`` images (uint8 [n, H, W, C]) from a ``DiffusionModel`` for one batch of ``prompts`` (empty for an
    unconditional model), with classifier-free guidance at scale ``guidance`` (1: the plain conditional
    prediction); ``plan`` (see ``SamplingPlan``) changes the conditioning or the steps."""
    import torch

    plan = plan or SamplingPlan()
    sched = model.make_scheduler(sampler)
    sched.set_timesteps(steps)
    cond = model.encode(prompts) if prompts else {}
    uncond = model.empty(n) if prompts and (guidance != 1.0 or plan.needs_uncond()) else None
    x = model.noise(n, generator) * float(getattr(sched, "init_noise_sigma", 1.0))
    with plan.context(model):
        if prompts:
            cond = plan.condition(model, x, sched.timesteps[0].to(model.device), cond, uncond)
        with torch.no_grad():
            for i, t in enumerate(sched.timesteps):
                eps = plan.eps(model, x, t.to(model.device), i, cond, uncond, guidance)
                kw = {"generator": generator} if sampler == "ddpm" else {}
                x = sched.step(eps.to(x.dtype), t, x, **kw).prev_sample
            return model.from_model(x)


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    arr = img[..., 0] if img.shape[2] == 1 else img
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: np.ndarray, path: Path, cols: Optional[int] = None, pad: int = 2) -> None:
    """Tile ``images`` (uint8 [n, h, w, c]) into one PNG, white gaps between tiles."""
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = img
    write_bytes(path, png_bytes(grid))


def read_prompts(path: str | os.PathLike[str], what: str = "--prompts") -> list[str]:
    """Prompts from a text file (one per line) or JSON lines (a string, or an object with caption/prompt/
    text/class). Blank lines are skipped. ``what``: the option that named the file, for the errors."""
    p = Path(path)
    if not p.is_file():
        why = "is not a regular file" if p.exists() else "does not exist"
        raise SourceError(f"prompts file {path} {why}. Check the {what} path.")
    out: list[str] = []
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"prompts file {path} is not UTF-8 text (byte {exc.start}). Re-save it as UTF-8.") from None
    except OSError as exc:
        raise SourceError(f"cannot read prompts file {path}: {exc.strerror or exc}.") from None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s[0] in "{\"":
            try:
                obj = parse_json(s)
            except ValueError:
                obj = s
            if isinstance(obj, dict):
                obj = next((obj[k] for k in _PROMPT_KEYS if isinstance(obj.get(k), (str, int))), None)
                if obj is None:
                    raise SourceError(f"{path} line {n}: a JSON object needs one of the keys "
                                      f"{', '.join(_PROMPT_KEYS)}")
            s = str(obj)
        out.append(s)
    if not out:
        raise SourceError(f"prompts file {path} holds no prompts")
    return out


def load_run(run_dir: str | os.PathLike[str], device: Any) -> tuple[Any, Any, dict[str, Any], int]:
    """(EMA model on ``device`` in eval mode, Conditioner, model config, training step)."""
    from .checkpoint import load_checkpoint
    from .cond import Conditioner
    from .nets import build_model

    ckpt = load_checkpoint(run_dir)
    cfg = ckpt["config"]["model"]
    clip = None
    if cfg["cond"] == "caption" and cfg["text"]["kind"] == "clip":
        from .text import load_clip_text_encoder

        clip = load_clip_text_encoder(cfg["text"]["path"]).to(device)
    model = build_model(cfg)
    model.load_state_dict(ckpt["ema"])
    return model.to(device).eval(), Conditioner.from_state(ckpt["conditioning"], clip), cfg, int(ckpt["step"])


def sample(run_dir: str | os.PathLike[str], n: int, out: str | os.PathLike[str], *,
           prompts: str | os.PathLike[str] | Sequence[str] | None = None, sampler: str = S["sampler"],
           steps: int = S["steps"], seed: int = S["seed"], batch: int = S["batch"], device: str = S["device"],
           guidance: float = S["guidance"], plan: Optional[SamplingPlan] = None,
           progress: Optional[ProgressCallback] = None) -> SampleResult:
    """Write ``n`` generations of the model in ``run_dir`` (a ``diffrep train`` run or a local Stable Diffusion
    folder) to ``out`` as PNGs, with ``prompts.jsonl``.

    ``prompts`` (a file path, or a list of strings) are cycled to ``n``; without them, caption and class
    models cycle through their training captions / classes. ``guidance``: classifier-free guidance scale
    (1 = none; above 1 needs a model trained with caption dropout). ``plan``: an inference-time mitigation
    (``mitigation.plan``), checked against the model by its maker. The same ``seed`` and ``batch`` give the
    same images.
    """
    from .adapter import load_model

    if n < 1:
        raise DiffrepError(f"--n {n}: ask for at least one image")
    if sampler not in SAMPLERS:
        raise DiffrepError(f"--sampler {sampler!r}: use ddim or ddpm")
    check_settings(batch=batch, sample_steps=steps, guidance=guidance)
    t0 = time.perf_counter()
    model = load_model(run_dir, device)
    if guidance != 1.0:
        model.require_prompts(f"--guidance {guidance:g}")
    if plan is not None:
        plan.bind(model, guidance)
    given = read_prompts(prompts) if isinstance(prompts, (str, os.PathLike)) else list(prompts or [])
    if given:
        texts = [given[i % len(given)] for i in range(n)]
    else:
        texts = model.default_prompts(n)
    records = model.describe_prompts(texts) if texts else []
    out_dir = ensure_writable_dir(out)
    with DirLock(out_dir, "sample folder"):
        earlier = earlier_samples(out_dir)
        (out_dir / SAMPLE_MARK).touch()
        (out_dir / "prompts.jsonl").unlink(missing_ok=True)  # until the new one is written, no list describes them
        result = _sample_into(out_dir, model, texts, records, n, sampler, steps, seed, batch, guidance, t0,
                              model.unknown_words(given), plan, progress)
        for name in earlier - set(result.files):  # an earlier run's images this run did not rewrite
            (out_dir / name).unlink(missing_ok=True)
        return result


def earlier_samples(out_dir: Path) -> set[str]:
    """The images an earlier ``sample`` run wrote into ``out_dir`` (replaced by this run); OutputError when the
    folder holds anything else: generations need a folder of their own, since ``diffrep audit DIR`` reads every
    image in it, and a user's own files there would be overwritten."""
    names = {p.name for p in out_dir.iterdir()} - {".lock", SAMPLE_MARK, "prompts.jsonl"}
    ours = {n for n in names if _SAMPLE_NAME.fullmatch(n)}
    if not (out_dir / SAMPLE_MARK).is_file():  # a folder of an older diffrep: its prompts.jsonl lists its images
        ours &= _listed(out_dir / "prompts.jsonl")
    others = sorted(names - ours)
    if others:
        raise OutputError(f"{printable(str(out_dir))} already holds files that `diffrep sample` did not write "
                          f"({len(others)}, e.g. {printable(others[0])}): generations need a folder of their own "
                          "(`diffrep audit` reads every image in it). Choose a new or empty --out.")
    return ours


def _listed(path: Path) -> set[str]:
    """The file names a prompts.jsonl lists (none when it is missing or not one diffrep wrote)."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {str(r["file"]) for r in rows}
    except (OSError, ValueError, TypeError, KeyError):
        return set()


def _sample_into(out_dir: Path, model: Any, texts: list[str], records: list[dict[str, Any]], n: int, sampler: str,
                 steps: int, seed: int, batch: int, guidance: float, t0: float, unknown: list[str],
                 plan: Optional[SamplingPlan], progress: Optional[ProgressCallback]) -> SampleResult:
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    plan = plan or SamplingPlan()
    rng = np.random.default_rng([int(seed), 25])  # prompt edits: their own stream, so images stay comparable
    width = max(5, len(str(n - 1)))
    files: list[str] = []
    lines: list[str] = []
    emit(progress, "sample", 0, n)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        used = plan.prompts(texts[start:start + b], rng) if texts else []
        imgs = generate(model, used, b, sampler=sampler, steps=steps, generator=gen, guidance=guidance, plan=plan)
        extra = plan.records(b)
        for j, img in enumerate(imgs):
            name = f"{start + j:0{width}d}.png"
            write_bytes(out_dir / name, png_bytes(img))
            files.append(name)
            rec: dict[str, Any] = {"file": name}
            if records:
                rec.update(records[start + j])
                if guidance != 1.0:
                    rec["guidance"] = guidance
                if used[j] != texts[start + j]:
                    rec["prompt_used"] = used[j]
            rec.update(extra[j])
            lines.append(json.dumps(rec, ensure_ascii=False))
        emit(progress, "sample", start + b, n)
    write_text(out_dir / "prompts.jsonl", "\n".join(lines) + "\n")
    return SampleResult(out_dir, files, int(getattr(model, "step", 0)), time.perf_counter() - t0, unknown)
