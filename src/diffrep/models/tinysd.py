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
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..fsutil import write_text
from ..progress import ProgressCallback, emit

SPECIALS = ("<|startoftext|>", "<|endoftext|>")
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.,'-!?"
MAX_LEN = 16
TEXT_DIM = 32


# CLIP's word split (``CLIPTokenizer``'s pattern with ASCII classes): contractions, letter runs, single digits,
# punctuation runs
_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+")


def train_bpe(captions: Sequence[str], vocab_size: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-format byte-pair vocabulary learnt on ``captions`` (lowercased, split into words as CLIP splits
    them, the end-of-word suffix ``</w>`` on each word's last symbol): the specials, every character of
    ``ALPHABET`` (and any other seen) alone and at a word's end, then one token per merge, the most frequent
    pair first and ties broken by the pair's text, until ``vocab_size`` tokens or no pair is left. The same
    captions give the same files on every run."""
    from collections import Counter

    words = Counter(w for c in captions for w in _WORDS.findall(c.lower()))
    chars = list(ALPHABET) + sorted({ch for w in words for ch in w} - set(ALPHABET))
    tokens = list(SPECIALS) + chars + [ch + "</w>" for ch in chars]
    known = set(tokens)
    seqs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[tuple[str, str]] = []
    while len(tokens) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, f in words.items():
            for pair in zip(seqs[w], seqs[w][1:]):
                pairs[pair] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        if best[0] + best[1] not in known:
            tokens.append(best[0] + best[1])
            known.add(tokens[-1])
        seqs = {w: _merged(s, best) for w, s in seqs.items()}
    return {t: i for i, t in enumerate(tokens)}, merges


def _merged(seq: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(seq):
        if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
            out.append(seq[i] + seq[i + 1])
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return tuple(out)


def write_clip_tokenizer(captions: Sequence[str], folder: Path, vocab_size: int = 400, max_len: int = MAX_LEN) -> None:
    """Write ``vocab.json``, ``merges.txt`` (``train_bpe``) and ``tokenizer_config.json`` into ``folder``: the
    files ``CLIPTokenizer.from_pretrained`` reads."""
    vocab, merges = train_bpe(captions, vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text(folder / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
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
