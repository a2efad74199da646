"""``attn-rescale`` (Ren et al., ECCV 2024, "Unveiling and Mitigating Memorization in Text-to-image Diffusion
Models through Cross Attention"): memorized prompts concentrate cross-attention on a few trigger tokens;
multiplying the beginning token's attention logit by a factor C > 1 before the softmax moves attention to it
and away from the triggers. Applied to every cross-attention layer of the UNet (diffusers ``attn2``) for the
whole sampling loop, through a replacement attention processor that is removed afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

from ..errors import DiffrepError
from ..models.sample import SamplingPlan
from .prompts import require_text


class BosRescaleProcessor:
    """Cross-attention with the first (beginning-of-text) key's logits multiplied by ``factor``; the rest
    follows diffusers' plain attention processor (mask, residual, output rescaling). ``observe(probs, batch)``,
    when given, sees each call's attention probabilities [batch * heads, queries, keys] (factor 1: plain
    attention, recorded)."""

    def __init__(self, factor: float, observe: Optional[Callable[[Any, int], None]] = None) -> None:
        self.factor = factor
        self.observe = observe

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None, attention_mask: Any = None,
                 temb: Any = None, *args: Any, **kwargs: Any) -> Any:
        import torch

        residual = hidden_states
        spatial = hidden_states.dim() == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if getattr(attn, "norm_cross", False) and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        logits = torch.bmm(q.float(), k.float().transpose(1, 2)) * attn.scale
        if encoder_hidden_states is not None:
            logits[..., 0] = logits[..., 0] * self.factor
        if attention_mask is not None:
            logits = logits + attention_mask.float()
        probs = logits.softmax(dim=-1)
        if self.observe is not None and encoder_hidden_states is not None:
            self.observe(probs, batch)
        out = torch.bmm(probs.to(v.dtype), v)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if spatial:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


@contextlib.contextmanager
def cross_attention_processor(model: Any, proc: Any) -> Iterator[None]:
    """``proc`` on every cross-attention layer (diffusers ``attn2``) of ``model``'s UNet while the block runs; the
    processors it had are put back afterwards."""
    unet = model.cross_attention_unet()
    before = dict(unet.attn_processors)
    unet.set_attn_processor({n: (proc if n.endswith("attn2.processor") else q) for n, q in before.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(before)


class BosRescale(SamplingPlan):
    name = "attn-rescale"

    def __init__(self, factor: float) -> None:
        self.factor = float(factor)

    def bind(self, model: Any, guidance: float) -> None:
        require_text(model, "attn-rescale")
        unet = model.cross_attention_unet()
        if not any(n.endswith("attn2.processor") for n in getattr(unet, "attn_processors", {})):
            raise DiffrepError(f"--mitigate attn-rescale: {model.path} has no cross-attention layers to rescale")
        if not self.factor > 0:
            raise DiffrepError(f"--mitigate-strength {self.factor}: attn-rescale needs a factor > 0 (above 1 mitigates)")

    def context(self, model: Any) -> Any:
        return cross_attention_processor(model, BosRescaleProcessor(self.factor))

    def records(self, n: int) -> list[dict[str, Any]]:
        return [{"mitigation": self.name, "mitigation_strength": self.factor} for _ in range(n)]
