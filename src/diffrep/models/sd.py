"""``DiffusersModel``: a local diffusers folder with the Stable Diffusion layout, behind ``DiffusionModel``.

The folder holds ``unet/`` (``UNet2DConditionModel``), ``vae/`` (``AutoencoderKL``), ``text_encoder/``
(``CLIPTextModel``), ``tokenizer/`` (CLIP BPE: ``vocab.json``, ``merges.txt``) and ``scheduler/``
(``scheduler_config.json``), as ``save_pretrained`` writes them and as Stable Diffusion 1.x/2.x snapshots
are laid out. Each part is read with ``from_pretrained(..., local_files_only=True)``: nothing is downloaded.
Prompts are encoded as the Stable Diffusion pipeline does (padded to the tokenizer's length, the text
encoder's last hidden state, no attention mask to the UNet); the diffusion runs in VAE latents
(``vae.encode(x).latent_dist.mean * scaling_factor``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DiffrepError
from .adapter import Cond, DiffusionModel, _timesteps, _to_uint8, pixels

PARTS = {"unet": ("config.json",), "vae": ("config.json",), "text_encoder": ("config.json",),
         "tokenizer": ("vocab.json", "merges.txt"), "scheduler": ("scheduler_config.json",)}
TRANSFORMERS_HINT = "pip install 'diffrep[models]' (it includes transformers)"


def looks_like_diffusers(folder: Path) -> bool:
    return (folder / "model_index.json").is_file() or (folder / "unet" / "config.json").is_file()


def missing_parts(folder: Path) -> list[str]:
    """The files of the Stable Diffusion layout that ``folder`` lacks (weights checked by the loaders)."""
    return [f"{part}/{name}" for part, names in PARTS.items() for name in names
            if not (folder / part / name).is_file()]


class DiffusersModel(DiffusionModel):
    kind = "diffusers"

    def __init__(self, path: str, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler_config: Any,
                 device: Any) -> None:
        import torch

        self.path, self.unet, self.vae, self.text_encoder, self.tokenizer = path, unet, vae, text_encoder, tokenizer
        self.scheduler_config, self.device = scheduler_config, device
        self.conditional = True
        self.has_unconditional = True  # Stable Diffusion is trained with caption dropout
        c, s = int(unet.config.in_channels), int(unet.config.sample_size)
        self.shape = (c, s, s)
        self.down = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_size, self.image_channels = s * self.down, int(vae.config.in_channels)
        self.scaling = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
        self.max_len = int(tokenizer.model_max_length)
        self.max_prompt_tokens = self.max_len - 2
        from diffusers import DDPMScheduler

        self.alphas = DDPMScheduler.from_config(scheduler_config).alphas_cumprod.to(torch.float32)
        self.dtype = next(unet.parameters()).dtype

    def _ids(self, prompts: Sequence[str]) -> Any:
        return self.tokenizer(list(prompts), padding="max_length", max_length=self.max_len, truncation=True,
                              return_tensors="pt")["input_ids"].to(self.device)

    def encode(self, prompts: Sequence[str]) -> Cond:
        import torch

        with torch.no_grad():
            hidden = self.text_encoder(self._ids(prompts))[0]
        return {"hidden": hidden.to(self.dtype)}

    def predict(self, x: Any, t: Any, cond: Cond) -> Any:
        t = _timesteps(t, x.shape[0], self.device)
        return self.unet(x.to(self.dtype), t, encoder_hidden_states=cond["hidden"]).sample

    def to_model(self, images: np.ndarray) -> Any:
        import torch

        x = pixels(images, self.image_channels, self.image_size).to(self.device, self.vae.dtype)
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mean * self.scaling

    def from_model(self, x: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            img = self.vae.decode(x.to(self.vae.dtype) / self.scaling).sample
        return _to_uint8(img)

    def vocabulary(self) -> list[str]:
        from .adapter import bpe_words

        return bpe_words(self.tokenizer)

    def cross_attention_unet(self) -> Any:
        return self.unet

    def tokens(self, prompt: str) -> list[str]:
        ids = self.tokenizer(prompt, truncation=True, max_length=self.max_len)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)

    def truncated(self, prompt: str) -> bool:
        return len(self.tokenizer(prompt, verbose=False)["input_ids"]) > self.max_len

    def make_scheduler(self, sampler: str) -> Any:
        from diffusers import DDIMScheduler, DDPMScheduler

        if sampler == "ddim":
            return DDIMScheduler.from_config(self.scheduler_config)
        if sampler == "ddpm":
            return DDPMScheduler.from_config(self.scheduler_config)
        raise DiffrepError(f"sampler {sampler!r}: use ddim or ddpm")


def load_diffusers(path: str | os.PathLike[str], device: str = "cpu") -> DiffusersModel:
    """Load the Stable Diffusion parts of ``path`` onto ``device`` (float32 on the CPU, float16 on CUDA)."""
    from .deps import require_models, resolve_device

    folder = Path(path).expanduser()
    missing = missing_parts(folder)
    if missing:
        raise DiffrepError(f"{path} is not a complete Stable Diffusion (diffusers) folder: missing "
                           f"{', '.join(missing)}")
    torch, _ = require_models()
    dev = resolve_device(device)
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise DiffrepError(f"a diffusers model folder needs the transformers package: {TRANSFORMERS_HINT}") from None
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    with quiet_loading():
        try:
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=dtype)
            vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True, torch_dtype=dtype)
            text = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=dtype)
            tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
            sched = DDPMScheduler.load_config(folder / "scheduler", local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise DiffrepError(f"cannot load the Stable Diffusion folder {path}: {_load_error(exc)}") from None
    for m in (unet, vae, text):
        m.to(dev).eval().requires_grad_(False)
    return DiffusersModel(str(folder), unet, vae, text, tokenizer, sched, dev)


def _load_error(exc: BaseException) -> str:
    """One line for a loading failure: the first shape mismatch when weights do not fit their config.json
    (PyTorch lists every one), else the message's first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    mismatch = next((ln for ln in lines if ln.startswith("size mismatch")), None)
    if mismatch:
        return f"the weights do not fit the config.json beside them ({mismatch})"
    return lines[0]


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' loading messages and bars off (library code never prints), then back."""
    from diffusers.utils import logging as d_log
    from transformers.utils import logging as t_log

    d_level, t_level, bars = d_log.get_verbosity(), t_log.get_verbosity(), t_log.is_progress_bar_enabled()
    d_log.set_verbosity(d_log.CRITICAL)  # a failed load raises, and the caller says it in one line
    t_log.set_verbosity(t_log.CRITICAL)
    t_log.disable_progress_bar()
    d_log.disable_progress_bar()
    try:
        yield
    finally:
        d_log.set_verbosity(d_level)
        t_log.set_verbosity(t_level)
        if bars:
            t_log.enable_progress_bar()
        d_log.enable_progress_bar()
