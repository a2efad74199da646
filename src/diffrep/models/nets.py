"""The denoiser: a diffusers UNet plus (for caption models) the jointly trained text encoder.

A model is a ``torch.nn.ModuleDict`` (``unet``, optionally ``text``) built from the run's ``model``
config, so ``state_dict`` holds everything trained and a checkpoint rebuilds it exactly:

- ``none``: ``UNet2DModel`` (the measured CPU recipe: widths 16/32/32, one ResNet per level, no attention
  in the down/up blocks, 8 norm groups; 0.27M parameters at 32 px gray).
- ``class``: the same UNet with ``num_class_embeds`` (a learned embedding added to the time embedding).
- ``caption``: ``UNet2DConditionModel`` with cross-attention at the lowest resolution and in the mid
  block only (``cross_attention_dim`` = the text encoder's width), conditioned on ``text.py``'s encoder.
"""
from __future__ import annotations

from typing import Any, Optional

CONDS = ("none", "class", "caption")
DEFAULT_CHANNELS = (16, 32, 32)
TEXT_DIM, TEXT_LAYERS, TEXT_HEADS = 64, 2, 4
ATTENTION_HEADS = 4


def model_config(cond: str, *, image_channels: int, size: int, channels: tuple[int, ...] = DEFAULT_CHANNELS,
                 num_classes: int = 0, text: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The JSON-able description ``build_model`` needs (stored in config.json and checkpoints)."""
    norm_groups = 8 if all(c % 8 == 0 for c in channels) else 1
    cfg: dict[str, Any] = {"cond": cond, "image_channels": image_channels, "size": size,
                           "channels": list(channels), "layers_per_block": 1, "norm_groups": norm_groups}
    if cond == "class":
        cfg["num_classes"] = num_classes
    if cond == "caption":
        cfg["text"] = text or {}
    return cfg


def build_model(cfg: dict[str, Any]) -> Any:
    """A fresh, randomly initialised ModuleDict for ``cfg`` (seed torch's RNG first for determinism)."""
    from diffusers import UNet2DConditionModel, UNet2DModel
    from torch import nn

    ch = tuple(int(c) for c in cfg["channels"])
    common = dict(sample_size=cfg["size"], in_channels=cfg["image_channels"], out_channels=cfg["image_channels"],
                  block_out_channels=ch, layers_per_block=cfg["layers_per_block"],
                  norm_num_groups=cfg["norm_groups"])
    parts: dict[str, Any] = {}
    if cfg["cond"] in ("none", "class"):
        parts["unet"] = UNet2DModel(**common, down_block_types=("DownBlock2D",) * len(ch),
                                    up_block_types=("UpBlock2D",) * len(ch),
                                    num_class_embeds=cfg.get("num_classes") or None)
    elif cfg["cond"] == "caption":
        text = cfg["text"]
        down = ("DownBlock2D",) * (len(ch) - 1) + ("CrossAttnDownBlock2D",)
        up = ("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (len(ch) - 1)
        parts["unet"] = UNet2DConditionModel(**common, down_block_types=down, up_block_types=up,
                                             mid_block_type="UNetMidBlock2DCrossAttn",
                                             cross_attention_dim=int(text["dim"]),
                                             attention_head_dim=ATTENTION_HEADS)
        if text["kind"] == "word":
            from .text import build_text_encoder

            parts["text"] = build_text_encoder(int(text["vocab_size"]), int(text["max_len"]), int(text["dim"]),
                                               int(text["layers"]), int(text["heads"]))
    else:
        raise ValueError(f"unknown cond {cfg['cond']!r}")
    return nn.ModuleDict(parts)


def predict_noise(model: Any, x: Any, t: Any, cond: dict[str, Any]) -> Any:
    """The UNet's noise prediction for noisy images ``x`` at timesteps ``t``.

    ``cond`` is empty (unconditional), ``{"labels": LongTensor}``, ``{"ids", "mask"}`` (token ids for the
    jointly trained encoder) or ``{"hidden", "mask"}`` (precomputed text states, e.g. from CLIP).
    """
    unet = model["unet"]
    if "labels" in cond:
        return unet(x, t, class_labels=cond["labels"]).sample
    if "ids" in cond or "hidden" in cond:
        if "ids" in cond:
            from .text import encode_text

            hidden = encode_text(model["text"], cond["ids"], cond["mask"])
        else:
            hidden = cond["hidden"]
        if "text_noise" in cond:  # the GN mitigation: lambda * N(0, I) on the chosen samples' text embeddings
            import torch

            scale = cond["text_noise"].to(hidden.device, hidden.dtype).view(-1, 1, 1)
            hidden = hidden + scale * torch.randn_like(hidden)
        return unet(x, t, encoder_hidden_states=hidden, encoder_attention_mask=cond["mask"]).sample
    return unet(x, t).sample


def ema_update(ema: Any, model: Any, decay: float, step: int) -> None:
    """``ema = d * ema + (1 - d) * model`` with the usual warm-up ``d = min(decay, (1 + step) / (10 + step))``."""
    import torch

    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def scheduler(kind: str = "ddpm", train_steps: int = 1000) -> Any:
    """The 1,000-step linear-beta DDPM noise schedule, as a DDPM (ancestral) or DDIM sampler."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind == "ddpm":
        return DDPMScheduler(num_train_timesteps=train_steps)
    if kind == "ddim":
        return DDIMScheduler(num_train_timesteps=train_steps)
    raise ValueError(kind)
