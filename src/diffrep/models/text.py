"""Text conditioning: a word tokenizer over the training captions and a small text encoder.

No CLIP weights can be downloaded here, so caption-conditioned models train their own encoder jointly
with the UNet: a word embedding plus learned positions and a 2-layer pre-norm transformer
(``build_text_encoder``; stock torch modules in a ``ModuleDict``, run with ``encode_text``). Every
sequence starts with a ``<bos>`` token, so the cross-attention mask is never empty, even for an empty
caption. Users with a CLIP text encoder on disk load it with ``load_clip_text_encoder`` (needs
``transformers``; files are read locally, nothing is downloaded).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DiffrepError

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
SPECIALS = (PAD, BOS, UNK)
MAX_TOKENS = 32
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; punctuation and '_' separate words)."""
    return _WORDS.findall(text.lower())


@dataclass(frozen=True)
class WordTokenizer:
    """Maps captions to fixed-length id sequences: ``<bos>`` + words (unknown -> ``<unk>``) + padding."""

    vocab: tuple[str, ...]
    max_len: int

    @classmethod
    def build(cls, captions: Iterable[str | None], max_len: int = MAX_TOKENS, extra: int = 0) -> "WordTokenizer":
        """Vocabulary: the special tokens, then every word of the captions in sorted order. Sequences hold
        the longest caption plus ``extra`` words (room for mitigations that insert words), at most ``max_len``."""
        caps = [c or "" for c in captions]
        vocab = sorted({w for c in caps for w in words(c)})
        longest = max((len(words(c)) for c in caps), default=0)
        return cls(SPECIALS + tuple(vocab), max(2, min(max_len, longest + 1 + extra)))

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def ids(self, text: str | None) -> list[int]:
        """``max_len`` ids for ``text`` (longer captions are cut)."""
        idx = self.index
        out = [idx[BOS]] + [idx.get(w, idx[UNK]) for w in words(text or "")]
        out = out[: self.max_len]
        return out + [idx[PAD]] * (self.max_len - len(out))

    def encode(self, texts: Sequence[str | None]) -> tuple[Any, Any]:
        """(ids LongTensor [B, L], mask BoolTensor [B, L], True = a real token)."""
        import torch

        ids = torch.tensor([self.ids(t) for t in texts], dtype=torch.long)
        return ids, ids != 0

    def unknown_words(self, text: str) -> list[str]:
        idx = self.index
        return [w for w in words(text) if w not in idx]

    def to_json(self) -> dict[str, Any]:
        return {"vocab": list(self.vocab), "max_len": self.max_len}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "WordTokenizer":
        return cls(tuple(obj["vocab"]), int(obj["max_len"]))


def build_text_encoder(vocab_size: int, max_len: int, dim: int = 64, layers: int = 2, heads: int = 4) -> Any:
    """Embedding + positions + ``layers`` transformer layers + final LayerNorm, as a ``ModuleDict``."""
    import torch
    from torch import nn

    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    enc = nn.ModuleDict({
        "tokens": nn.Embedding(vocab_size, dim),
        "positions": nn.Embedding(max_len, dim),
        "layers": nn.TransformerEncoder(layer, layers, enable_nested_tensor=False),
        "norm": nn.LayerNorm(dim),
    })
    with torch.no_grad():
        enc["tokens"].weight.normal_(0.0, 0.02)
        enc["positions"].weight.normal_(0.0, 0.02)
    return enc


def encode_text(enc: Any, ids: Any, mask: Any) -> Any:
    """Hidden states [B, L, dim] of a ``build_text_encoder`` module (padding masked out)."""
    import torch

    pos = torch.arange(ids.shape[1], device=ids.device)
    h = enc["tokens"](ids) + enc["positions"](pos)[None]
    h = enc["layers"](h, src_key_padding_mask=~mask)
    return enc["norm"](h)


class ClipTextEncoder:
    """A frozen local CLIP text encoder: ``encode(texts) -> (hidden [B, 77, D], mask [B, 77])``."""

    def __init__(self, path: str, tokenizer: Any, model: Any) -> None:
        self.path = path
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.dim = int(model.config.hidden_size)
        self.max_len = int(getattr(tokenizer, "model_max_length", 77) or 77)

    def to(self, device: Any) -> "ClipTextEncoder":
        self.model.to(device)
        return self

    def encode(self, texts: Sequence[str | None], device: Any = None) -> tuple[Any, Any]:
        import torch

        tok = self.tokenizer([t or "" for t in texts], padding="max_length", truncation=True,
                             max_length=self.max_len, return_tensors="pt")
        dev = device if device is not None else next(self.model.parameters()).device
        ids, mask = tok["input_ids"].to(dev), tok["attention_mask"].to(dev)
        with torch.no_grad():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden, mask.bool()


def load_clip_text_encoder(path: str | os.PathLike[str]) -> ClipTextEncoder:
    """Load a CLIP text encoder saved with ``save_pretrained`` (tokenizer files + ``config.json`` + weights).

    ``path`` is a local folder, e.g. the ``text_encoder`` folder of a Stable Diffusion snapshot with its
    sibling ``tokenizer`` folder, or one folder holding both. Nothing is downloaded.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise DiffrepError(f"--text-encoder {path}: not a folder with a CLIP text encoder (config.json and "
                           "weights saved with save_pretrained). Point it at a local copy; nothing is downloaded.")
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise DiffrepError("a CLIP text encoder needs the transformers package: pip install transformers "
                           "(or train without --text-encoder to use diffrep's own small text encoder)") from None
    tok_dir = folder if (folder / "vocab.json").is_file() else folder.parent / "tokenizer"
    if not (tok_dir / "vocab.json").is_file():
        raise DiffrepError(f"--text-encoder {path}: no CLIP tokenizer files (vocab.json, merges.txt) in {folder} "
                           f"or {folder.parent / 'tokenizer'}")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # library code never prints; restored below
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        model = CLIPTextModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DiffrepError(f"--text-encoder {path}: cannot load a CLIP text encoder from it ({exc})") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return ClipTextEncoder(str(folder.resolve()), tokenizer, model)
