"""A tiny Stable-Diffusion-shaped pipeline, built and trained here, saved in the Stable Diffusion layout.

No Stable Diffusion weights can be downloaded on the machines diffrep is tested on, yet the code path a
user's local SD folder takes (``sd.load_diffusers``) must run for real. ``build_tiny_sd`` makes every part
from a small config: a CLIP BPE tokenizer trained on the captions (``vocab.json``, ``merges.txt``), a
``CLIPTextModel``, an ``AutoencoderKL`` (factor-2 latents with 4 channels), a ``UNet2DConditionModel``
with cross-attention and the Stable Diffusion scaled-linear ``DDPMScheduler``, trains the VAE briefly on
the images (reconstruction plus a small KL term) and then the UNet on their latents with the text encoder
frozen and the caption dropped for ``uncond_p`` of the samples (as Stable Diffusion was trained), and
writes each part with ``save_pretrained`` next to a ``model_index.json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..fsutil import write_text
from ..progress import ProgressCallback, emit

SPECIALS = ("<|startoftext|>", "<|endoftext|>")
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.,'-!?"
MAX_LEN = 16
TEXT_DIM = 32


def write_clip_tokenizer(captions: Sequence[str], folder: Path, vocab_size: int = 400, max_len: int = MAX_LEN) -> None:
    """Train a CLIP-format BPE (end-of-word suffix ``</w>``) on ``captions`` and write ``vocab.json``,
    ``merges.txt`` and ``tokenizer_config.json`` into ``folder``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alpha = list(ALPHABET)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), end_of_word_suffix="</w>",
                                  initial_alphabet=alpha + [a + "</w>" for a in alpha], show_progress=False)
    tok.train_from_iterator([c for c in captions if c], trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    for piece in alpha + [a + "</w>" for a in alpha]:  # every character, also at a word's end (unseen in training)
        vocab.setdefault(piece, len(vocab))
    write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text(folder / "tokenizer_config.json", json.dumps({"model_max_length": max_len, "bos_token": SPECIALS[0],
                                                             "eos_token": SPECIALS[1], "pad_token": SPECIALS[1],
                                                             "unk_token": SPECIALS[1]}, indent=1))


def build_tiny_sd(images: np.ndarray, captions: Sequence[str], out: str | os.PathLike[str], *, vae_steps: int = 300,
                  unet_steps: int = 600, batch: int = 16, lr: float = 1e-3, uncond_p: float = 0.1, seed: int = 0,
                  vae_widths: tuple[int, int] = (32, 32), unet_widths: tuple[int, int] = (32, 64),
                  device: str = "cpu", progress: Optional[ProgressCallback] = None) -> Path:
    """Build, train and save a tiny SD-layout pipeline on ``images`` (uint8 [N, S, S, 3], S divisible by
    4) with one caption each; returns the folder. Widths must be multiples of 8 (the norm groups)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out_dir = Path(out)
    n, size = int(images.shape[0]), int(images.shape[1])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    write_clip_tokenizer(captions, out_dir / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer", local_files_only=True)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LEN,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1)).to(dev).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(vae_widths),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=size).to(dev)
    unet = UNet2DConditionModel(sample_size=size // 2, in_channels=4, out_channels=4, block_out_channels=tuple(unet_widths),
                                layers_per_block=1, norm_num_groups=8, cross_attention_dim=TEXT_DIM,
                                attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).to(dev)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(dev)

    _train_vae(vae, x_all, vae_steps, batch, lr, gen, progress)
    with torch.no_grad():
        latents = torch.cat([vae.encode(x_all[i:i + 64]).latent_dist.mean for i in range(0, n, 64)])
        scaling = float(1.0 / latents.std())
        vae.register_to_config(scaling_factor=scaling)
        latents = latents * scaling
        ids = tokenizer(list(captions) + [""], padding="max_length", max_length=MAX_LEN, truncation=True,
                        return_tensors="pt")["input_ids"].to(dev)
        hidden = text(ids)[0]
    _train_unet(unet, sched.alphas_cumprod.to(dev), latents, hidden[:-1], hidden[-1:], unet_steps, batch, lr,
                uncond_p, gen, progress)
    _save(out_dir, unet, vae, text, sched)
    return out_dir


def _train_vae(vae: Any, x_all: Any, steps: int, batch: int, lr: float, gen: Any,
               progress: Optional[ProgressCallback]) -> None:
    """The VAE: reconstruction MSE plus a small KL term, then frozen in eval mode."""
    import torch

    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    emit(progress, "tiny-sd vae", 0, steps, unit="step")
    for step in range(steps):
        x = x_all[torch.randint(0, len(x_all), (batch,), generator=gen).to(x_all.device)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=None)).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        emit(progress, "tiny-sd vae", step + 1, steps, unit="step")
    vae.eval().requires_grad_(False)


def _train_unet(unet: Any, alphas: Any, latents: Any, cond: Any, empty: Any, steps: int, batch: int, lr: float,
                uncond_p: float, gen: Any, progress: Optional[ProgressCallback]) -> None:
    """The UNet on the scaled latents: noise regression with the caption dropped (``empty``) for a share
    ``uncond_p`` of samples, as Stable Diffusion was trained."""
    import torch

    dev = latents.device
    opt = torch.optim.AdamW(unet.parameters(), lr=lr)
    emit(progress, "tiny-sd unet", 0, steps, unit="step")
    for step in range(steps):
        idx = torch.randint(0, len(latents), (batch,), generator=gen).to(dev)
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen).to(dev)
        t = torch.randint(0, 1000, (batch,), generator=gen).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        drop = (torch.rand(batch, generator=gen) < uncond_p).to(dev).view(-1, 1, 1)
        c = torch.where(drop, empty.expand_as(cond[idx]), cond[idx])
        loss = torch.nn.functional.mse_loss(unet(zt, t, encoder_hidden_states=c).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        emit(progress, "tiny-sd unet", step + 1, steps, unit="step")


def _save(out_dir: Path, unet: Any, vae: Any, text: Any, sched: Any) -> None:
    """The Stable Diffusion folder layout, loadable by ``sd.py`` and by diffusers."""
    from .sd import quiet_loading

    with quiet_loading():  # save_pretrained draws a bar; library code never prints
        for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text)):
            part.save_pretrained(out_dir / name)
        sched.save_pretrained(out_dir / "scheduler")
    write_text(out_dir / "model_index.json", json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"]}, indent=1))


def tiny_sd_from_folder(images_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, size: int = 32,
                        limit: Optional[int] = None, **kw: Any) -> Path:
    """``build_tiny_sd`` on a captioned image folder (``load_training_set``: a ``captions.jsonl`` beside the
    images), resized to ``size`` px RGB."""
    from .data import load_training_set

    ts = load_training_set(images_dir, size=size, subset=limit, seed=int(kw.get("seed", 0)), color="rgb")
    return build_tiny_sd(ts.images, [c or "" for c in ts.captions], out, **kw)
