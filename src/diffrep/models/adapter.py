"""One interface to a diffusion model, whatever trained it: ``DiffusionModel``.

Probes, extraction and sampling talk to a model only through this class:

- ``encode(prompts)`` turns prompts into a conditioning batch (a dict of tensors, batch first) and
  ``encode([""])`` is the empty prompt, the unconditional input of classifier-free guidance;
- ``predict(x_t, t, cond)`` is the noise prediction eps(x_t, t, c);
- ``alphas`` is the cumulative noise schedule (alpha-bar) of training, ``make_scheduler`` a sampler on it;
- ``to_model`` / ``from_model`` map uint8 images to the space the model diffuses in (pixels in [-1, 1] for
  a ``diffrep train`` run, VAE latents for a Stable Diffusion pipeline) and back;
- ``tokens(prompt)`` names the positions of a prompt's conditioning sequence, for per-token attribution.

Two implementations: ``RunModel`` over a ``diffrep train`` run folder (pixel-space UNet; diffrep's word
encoder or a local CLIP text encoder) and ``sd.DiffusersModel`` over a local folder with the Stable
Diffusion layout. ``load_model(path)`` picks by what the folder holds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import DiffrepError

Cond = dict  # conditioning batch: tensors with the batch on axis 0 (empty for unconditional models)


class DiffusionModel:
    """Base class: the shared helpers; subclasses set the attributes in ``__init__`` and implement
    ``encode``, ``predict``, ``to_model``, ``from_model`` and ``tokens``."""

    kind: str  # "run" | "diffusers"
    path: str
    device: Any
    conditional: bool  # takes prompts
    has_unconditional: bool  # eps(x_t, empty prompt) was trained (caption dropout), so guidance and Wen's score mean something
    shape: tuple[int, int, int]  # (channels, height, width) of the space the model diffuses in
    image_size: int  # pixels of the images it makes
    image_channels: int
    alphas: Any  # alpha-bar per training timestep, a float32 tensor on the CPU
    max_prompt_tokens: int  # conditioning positions a prompt has room for (longer prompts are cut)

    # --- to implement --------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> Cond:
        raise NotImplementedError

    def predict(self, x: Any, t: Any, cond: Cond) -> Any:
        raise NotImplementedError

    def to_model(self, images: np.ndarray) -> Any:
        raise NotImplementedError

    def from_model(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def tokens(self, prompt: str) -> list[str]:
        raise NotImplementedError

    def make_scheduler(self, sampler: str) -> Any:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------------
    @property
    def train_steps(self) -> int:
        return int(self.alphas.shape[0])

    def empty(self, n: int) -> Cond:
        """The unconditional input for ``n`` samples (the empty prompt)."""
        return self.encode([""] * n) if self.conditional else {}

    def truncated(self, prompt: str) -> bool:
        """Whether ``prompt`` is longer than the conditioning sequence holds (it is then cut)."""
        return False

    def default_prompts(self, n: int) -> list[str]:
        """Prompts to sample without any given: none here; a run cycles through its training captions."""
        return []

    def describe_prompts(self, prompts: Sequence[str]) -> list[dict[str, Any]]:
        """What each prompt means to the model, for ``prompts.jsonl`` (``{"caption": text}``)."""
        return [{"caption": p} for p in prompts]

    def unknown_words(self, prompts: Sequence[str]) -> list[str]:
        """Words of ``prompts`` the model's vocabulary lacks (a word tokenizer maps them to one token)."""
        return []

    def require_prompts(self, what: str) -> None:
        """Refuse ``what`` on a model that cannot take prompts or lacks the unconditional prediction."""
        if not self.conditional:
            raise DiffrepError(f"{self.path} is an unconditional model: {what} needs a prompt-conditioned "
                               "model (diffrep train --cond caption, or a Stable Diffusion folder)")
        if not self.has_unconditional:
            raise DiffrepError(f"{self.path} was trained without caption dropout, so its prediction for the empty "
                               f"prompt means nothing and {what} cannot be computed on it: train with "
                               "--uncond-p 0.1 (the default for --cond caption)")

    def vocabulary(self) -> list[str]:
        """Whole words the model's tokenizer knows (random-token mitigations draw from them)."""
        return []

    def cross_attention_unet(self) -> Any:
        """The UNet whose cross-attention layers read the prompt, or None (no cross-attention)."""
        return None

    def noise(self, n: int, generator: Any) -> Any:
        """Standard normal starting noise in model space, drawn on the CPU (device-independent seeds)."""
        import torch

        return torch.randn((n, *self.shape), generator=generator).to(self.device)

    def guided(self, x: Any, t: Any, cond: Cond, uncond: Optional[Cond], guidance: float) -> Any:
        """eps_u + g (eps_c - eps_u) in one batched call; the plain conditional prediction when ``g`` is 1
        or there is no unconditional input."""
        if uncond is None or guidance == 1.0:
            return self.predict(x, t, cond)
        eps_u, eps_c = self.predict_pair(x, t, cond, uncond)
        return eps_u + guidance * (eps_c - eps_u)

    def predict_pair(self, x: Any, t: Any, cond: Cond, uncond: Cond) -> tuple[Any, Any]:
        """(eps(x, t, empty), eps(x, t, c)) in one batched call."""
        return self.predict(_cat([x, x]), t, cat_cond([uncond, cond])).chunk(2)


def cat_cond(conds: Sequence[Cond]) -> Cond:
    """Concatenate conditioning batches along the batch axis."""
    if not conds or not conds[0]:
        return {}
    return {k: _cat([c[k] for c in conds]) for k in conds[0]}


def noise_gap(eps_c: Any, eps_u: Any) -> Any:
    """Wen et al.'s text-conditional noise magnitude per sample: ||eps(x_t, c) - eps(x_t, empty)||_2 (float32)."""
    return (eps_c.float() - eps_u.float()).flatten(1).norm(dim=1)


def repeat_cond(cond: Cond, k: int) -> Cond:
    """Each row of a conditioning batch ``k`` times in a row (row-major: rows i*k .. (i+1)*k-1 are row i)."""
    return {key: v.repeat_interleave(k, dim=0) for key, v in cond.items()}


def _cat(xs: Sequence[Any]) -> Any:
    import torch

    return torch.cat(list(xs))


class RunModel(DiffusionModel):
    """A ``diffrep train`` run: pixel-space UNet (EMA weights), class labels or captions."""

    kind = "run"

    def __init__(self, net: Any, conditioner: Any, cfg: dict[str, Any], *, path: str = "", step: int = 0,
                 uncond_p: float = 0.0, device: Any = None) -> None:
        from .nets import scheduler

        self.net, self.conditioner, self.cfg, self.step = net, conditioner, cfg, step
        self.path = path
        self.device = device if device is not None else next(net.parameters()).device
        self.conditional = cfg["cond"] != "none"
        self.has_unconditional = cfg["cond"] == "caption" and uncond_p > 0
        c, s = int(cfg["image_channels"]), int(cfg["size"])
        self.shape, self.image_size, self.image_channels = (c, s, s), s, c
        self.alphas = scheduler("ddpm").alphas_cumprod.float()
        tok = conditioner.tokenizer
        self.max_prompt_tokens = (tok.max_len - 1 if tok is not None else
                                  (conditioner.clip.max_len - 2 if conditioner.clip is not None else 0))

    def default_prompts(self, n: int) -> list[str]:
        return self.conditioner.default_prompts(n)

    def describe_prompts(self, prompts: Sequence[str]) -> list[dict[str, Any]]:
        return self.conditioner.resolve(list(prompts))

    def unknown_words(self, prompts: Sequence[str]) -> list[str]:
        return self.conditioner.unknown_words(list(prompts))

    def encode(self, prompts: Sequence[str]) -> Cond:
        cond = self.conditioner.encode(self.conditioner.resolve(list(prompts)), self.device)
        if "ids" in cond:  # run the jointly trained encoder once, so guidance and probes reuse the states
            from .text import encode_text

            cond = {"hidden": encode_text(self.net["text"], cond["ids"], cond["mask"]), "mask": cond["mask"]}
        return cond

    def predict(self, x: Any, t: Any, cond: Cond) -> Any:
        from .nets import predict_noise

        t = _timesteps(t, x.shape[0], self.device)
        return predict_noise(self.net, x, t, cond)

    def to_model(self, images: np.ndarray) -> Any:
        return pixels(images, self.image_channels, self.image_size).to(self.device)

    def from_model(self, x: Any) -> np.ndarray:
        return _to_uint8(x)

    def tokens(self, prompt: str) -> list[str]:
        tok = self.conditioner.tokenizer
        if tok is not None:
            from .text import BOS, UNK, words

            known = tok.index
            return ([BOS] + [w if w in known else UNK for w in words(prompt)])[: tok.max_len]
        clip = self.conditioner.clip
        ids = clip.tokenizer(prompt, truncation=True, max_length=clip.max_len)["input_ids"]
        return clip.tokenizer.convert_ids_to_tokens(ids)

    def truncated(self, prompt: str) -> bool:
        tok = self.conditioner.tokenizer
        if tok is not None:
            from .text import words

            return len(words(prompt)) + 1 > tok.max_len
        clip = self.conditioner.clip
        return clip is not None and len(clip.tokenizer(prompt, verbose=False)["input_ids"]) > clip.max_len

    def vocabulary(self) -> list[str]:
        tok = self.conditioner.tokenizer
        if tok is not None:
            from .mitigate import N_SPECIAL

            return list(tok.vocab[N_SPECIAL:])
        return bpe_words(self.conditioner.clip.tokenizer) if self.conditioner.clip is not None else []

    def cross_attention_unet(self) -> Any:
        return self.net["unet"] if self.cfg["cond"] == "caption" else None

    def make_scheduler(self, sampler: str) -> Any:
        from .nets import scheduler

        return scheduler(sampler)


def bpe_words(tokenizer: Any) -> list[str]:
    """The whole alphabetic words of a CLIP BPE tokenizer's vocabulary (entries ending in ``</w>``), sorted."""
    return sorted(w[:-4] for w in tokenizer.get_vocab() if w.endswith("</w>") and w[:-4].isalpha())


def _timesteps(t: Any, n: int, device: Any) -> Any:
    import torch

    t = torch.as_tensor(t, device=device)
    return t.expand(n) if t.dim() == 0 else t


def pixels(images: np.ndarray, channels: int, size: int) -> Any:
    """uint8 [N, H, W, C] images as a float tensor [N, channels, size, size] in [-1, 1] on the CPU."""
    import torch

    x = torch.tensor(_channels(np.asarray(images), channels)).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x / 127.5 - 1.0


def _channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [N, H, W, C] with the model's channel count (gray <-> RGB)."""
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.shape[-1] == channels:
        return arr
    if channels == 1:
        return np.round(arr[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))[..., None].astype(np.uint8)
    return np.repeat(arr[..., :1], 3, axis=-1) if arr.shape[-1] == 1 else arr[..., :3]


def _to_uint8(x: Any) -> np.ndarray:
    import torch

    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return x.permute(0, 2, 3, 1).numpy()


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> DiffusionModel:
    """The model in ``path``: a ``diffrep train`` run folder (``checkpoint.pt``) or a local diffusers folder
    with the Stable Diffusion layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
    Nothing is downloaded; a folder of neither layout is refused with what it lacks."""
    from .checkpoint import CHECKPOINT

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DiffrepError(f"model {path} is not a folder: give a `diffrep train` run folder or a local Stable "
                           "Diffusion (diffusers) folder")
    if (folder / CHECKPOINT).is_file():
        return load_run_model(folder, device)
    from .sd import looks_like_diffusers, load_diffusers

    if looks_like_diffusers(folder):
        return load_diffusers(folder, device)
    raise DiffrepError(f"{path} is neither a `diffrep train` run folder (no {CHECKPOINT}) nor a diffusers folder "
                       "with the Stable Diffusion layout (no unet/config.json or model_index.json)")


def load_run_model(run_dir: str | os.PathLike[str], device: str = "cpu") -> RunModel:
    from .checkpoint import read_config
    from .deps import require_models, resolve_device
    from .sample import load_run

    require_models()
    dev = resolve_device(device)
    net, conditioner, cfg, step = load_run(run_dir, dev)
    config = read_config(run_dir) or {}
    return RunModel(net, conditioner, cfg, path=str(run_dir), step=step,
                    uncond_p=float(config.get("uncond_p", 0.0) or 0.0), device=dev)
