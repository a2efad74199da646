"""Conditioning inputs: from training images (class labels, captions) and from user prompts.

A ``Conditioner`` knows the model's conditioning kind and its vocabulary (class names with their display
captions, the word tokenizer, or a frozen CLIP encoder). It turns a list of resolved prompts into the
``cond`` dict ``nets.predict_noise`` takes, and resolves free-text prompts for sampling: a class model
accepts a class name or its caption; a caption model accepts any text (unknown words map to ``<unk>``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..errors import DiffrepError
from .text import ClipTextEncoder, WordTokenizer


class Conditioner:
    def __init__(self, kind: str, *, classes: Sequence[str] = (), class_captions: Optional[dict[str, str]] = None,
                 tokenizer: Optional[WordTokenizer] = None, clip: Optional[ClipTextEncoder] = None,
                 prompts: Sequence[str] = ()) -> None:
        self.kind = kind
        self.classes = list(classes)
        self.class_captions = dict(class_captions or {})
        self.tokenizer = tokenizer
        self.clip = clip
        self.prompts = list(prompts)  # default prompts: distinct training captions / class names, in order

    # --- persistence (the checkpoint's "conditioning" entry) ------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": self.classes, "class_captions": self.class_captions,
                "tokenizer": self.tokenizer.to_json() if self.tokenizer else None, "prompts": self.prompts}

    @classmethod
    def from_state(cls, st: dict[str, Any], clip: Optional[ClipTextEncoder] = None) -> "Conditioner":
        tok = WordTokenizer.from_json(st["tokenizer"]) if st.get("tokenizer") else None
        return cls(st["kind"], classes=st.get("classes", ()), class_captions=st.get("class_captions"),
                   tokenizer=tok, clip=clip, prompts=st.get("prompts", ()))

    # --- prompts ---------------------------------------------------------------------------------------
    def resolve(self, prompts: Sequence[str]) -> list[dict[str, Any]]:
        """One record per prompt: ``{"caption": text}`` or ``{"class": name, "caption": display}``."""
        if self.kind == "none":
            if prompts:
                raise DiffrepError("this model is unconditional (trained with --cond none): prompts do not apply. "
                                   "Sample without --prompts.")
            return []
        if self.kind == "caption":
            return [{"caption": p} for p in prompts]
        by_name = {c: c for c in self.classes}
        by_caption = {self.class_captions.get(c, c).lower(): c for c in self.classes}
        out = []
        for p in prompts:
            key = by_name.get(p.strip()) or by_caption.get(p.strip().lower())
            if key is None:
                shown = ", ".join(f"{c} ({self.class_captions[c]})" if self.class_captions.get(c, c) != c else c
                                  for c in self.classes[:12])
                more = f" and {len(self.classes) - 12} more" if len(self.classes) > 12 else ""
                raise DiffrepError(f"prompt {p!r} is not a class of this model; use a class name or its caption: "
                                   f"{shown}{more}")
            out.append({"class": key, "caption": self.class_captions.get(key, key)})
        return out

    def default_prompts(self, n: int) -> list[str]:
        """``n`` prompts cycling through the training captions (caption) or class names (class)."""
        if self.kind == "none" or not self.prompts:
            return []
        return [self.prompts[i % len(self.prompts)] for i in range(n)]

    def unknown_words(self, prompts: Sequence[str]) -> list[str]:
        if self.kind != "caption" or self.tokenizer is None:
            return []
        return sorted({w for p in prompts for w in self.tokenizer.unknown_words(p)})

    # --- tensors ---------------------------------------------------------------------------------------
    def encode(self, resolved: Sequence[dict[str, Any]], device: Any) -> dict[str, Any]:
        """The ``cond`` dict for a batch of resolved prompts (empty for unconditional models)."""
        import torch

        if self.kind == "none":
            return {}
        if self.kind == "class":
            index = {c: i for i, c in enumerate(self.classes)}
            return {"labels": torch.tensor([index[r["class"]] for r in resolved], dtype=torch.long, device=device)}
        texts = [r["caption"] for r in resolved]
        if self.clip is not None:
            hidden, mask = self.clip.encode(texts, device)
            return {"hidden": hidden, "mask": mask}
        assert self.tokenizer is not None
        ids, mask = self.tokenizer.encode(texts)
        return {"ids": ids.to(device), "mask": mask.to(device)}

    def for_training(self, class_keys: Optional[Sequence[str]], captions: Sequence[Optional[str]],
                     device: Any, batch: int = 256) -> Callable[[Any], dict[str, Any]]:
        """``cond_for(indices)`` over the training images, tensors precomputed once on ``device``."""
        import torch

        if self.kind == "none":
            return lambda idx: {}
        if self.kind == "class":
            assert class_keys is not None
            labels = self.encode([{"class": k} for k in class_keys], device)["labels"]
            return lambda idx: {"labels": labels[idx.to(device)]}
        texts = [c or "" for c in captions]
        if self.clip is None:
            full = self.encode([{"caption": t} for t in texts], device)
            return lambda idx: {k: v[idx.to(device)] for k, v in full.items()}
        uniq = sorted(set(texts))
        pos = {t: i for i, t in enumerate(uniq)}
        parts = [self.encode([{"caption": t} for t in uniq[i:i + batch]], device) for i in range(0, len(uniq), batch)]
        hidden = torch.cat([p["hidden"] for p in parts])
        mask = torch.cat([p["mask"] for p in parts])
        which = torch.tensor([pos[t] for t in texts], dtype=torch.long, device=device)
        return lambda idx: {"hidden": hidden[which[idx.to(device)]], "mask": mask[which[idx.to(device)]]}


def drop_captions(cond: dict[str, Any], empty: dict[str, Any], drop: Any) -> dict[str, Any]:
    """``cond`` with the rows where ``drop`` (a bool tensor) is set replaced by the one-row ``empty``
    conditioning (the empty caption); other keys (e.g. a mitigation's noise scale) pass through."""
    import torch

    out = dict(cond)
    for k, e in empty.items():
        v = cond[k]
        mask = drop.to(v.device).view(-1, *([1] * (v.dim() - 1)))
        out[k] = torch.where(mask, e.expand_as(v), v)
    return out


def distinct(values: Sequence[Optional[str]]) -> list[str]:
    """Distinct non-empty values in order of first appearance."""
    seen: dict[str, None] = {}
    for v in values:
        if v:
            seen.setdefault(v, None)
    return list(seen)
