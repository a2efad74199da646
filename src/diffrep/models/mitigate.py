"""Train-time caption mitigations of Somepalli et al. (NeurIPS 2023), for caption-conditioned models.

Each training sample's caption is changed with probability ``p`` (0.1 in the paper) at every step:

- ``rc`` random caption replacement: the caption's words are replaced by as many random vocabulary words;
- ``rt`` random token addition: two random vocabulary words are inserted at random positions;
- ``cwr`` caption word repetition: two of the caption's own words are repeated at random positions;
- ``gn`` Gaussian noise: ``lambda * N(0, I)`` (lambda 0.1) is added to the caption's text embedding.

``wen-filter`` (Wen et al., ICLR 2024, training-time mitigation) is of another kind: at every step the
text-conditional noise magnitude d = ||eps(x_t, c) - eps(x_t, empty)||_2 of each sample (at its own t) is
computed, and the samples whose d exceeds ``--wen-threshold`` are left out of that step's loss
(``WenFilter``). It needs the unconditional prediction (caption dropout, ``--uncond-p`` > 0); the share left
out and the mean d per logging interval go to ``log.csv`` so the threshold can be set against the observed
scale.

The paper's fifth, MC (one of several captions per image), needs several captions per image, which the
packaged datasets do not have. ``rc``/``rt``/``cwr`` work on the word ids of the jointly trained text
encoder (the random words come from the training vocabulary; the tokenizer is built 2 words longer so
insertions are not cut); ``gn`` also works with a frozen CLIP text encoder. All randomness comes from
the training run's generator, so a seeded run stays reproducible and resumable.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import DiffrepError

MITIGATIONS = ("rc", "rt", "cwr", "gn")  # caption mitigations
TRAIN_MITIGATIONS = MITIGATIONS + ("wen-filter",)
GN_LAMBDA = 0.1
INSERTED = 2  # words added by rt / cwr
N_SPECIAL = 3  # <pad>, <bos>, <unk>: never drawn as random words


def check(mode: Optional[str], p: float, cond: str, clip: bool, wen_threshold: Optional[float] = None,
          uncond_p: float = 0.0) -> None:
    if wen_threshold is not None and mode != "wen-filter":
        raise DiffrepError("--wen-threshold applies to --mitigate wen-filter")
    if mode is None:
        return
    if mode not in TRAIN_MITIGATIONS:
        raise DiffrepError(f"--mitigate {mode!r}: use one of {', '.join(TRAIN_MITIGATIONS)}")
    if cond != "caption":
        raise DiffrepError("--mitigate applies to caption-conditioned models (--cond caption)")
    if mode == "wen-filter":
        if wen_threshold is None or not wen_threshold > 0:
            raise DiffrepError("--mitigate wen-filter needs --wen-threshold T > 0: samples whose text-conditional "
                               "noise norm exceeds T are left out of the loss (log.csv reports the observed norms)")
        if not uncond_p > 0:
            raise DiffrepError("--mitigate wen-filter compares with the empty caption's prediction: train with "
                               "--uncond-p > 0")
        return
    if clip and mode != "gn":
        raise DiffrepError(f"--mitigate {mode} edits word ids of the jointly trained text encoder; with "
                           "--text-encoder (CLIP) only --mitigate gn applies")
    if not 0.0 < p <= 1.0:
        raise DiffrepError(f"--mitigate-p {p}: give a probability in (0, 1] (the paper uses 0.1)")


class CaptionMitigation:
    """``apply(cond, batch_size)``: the training ``cond`` dict with this step's caption changes."""

    def __init__(self, mode: str, p: float, vocab_size: int, generator: Any) -> None:
        self.mode, self.p, self.vocab_size, self.gen = mode, float(p), int(vocab_size), generator

    def _rand(self, n: int) -> Any:
        import torch

        return torch.rand(n, generator=self.gen)

    def _randint(self, low: int, high: int) -> int:
        import torch

        return int(torch.randint(low, high, (1,), generator=self.gen))

    def apply(self, cond: dict[str, Any]) -> dict[str, Any]:
        import torch

        if "ids" in cond:
            n = cond["ids"].shape[0]
        else:
            n = cond["hidden"].shape[0]
        hit = self._rand(n) < self.p
        if not bool(hit.any()):
            return cond
        if self.mode == "gn":
            return {**cond, "text_noise": hit.to(dtype=torch.float32) * GN_LAMBDA}
        ids = cond["ids"]
        rows = ids.cpu().tolist()
        for i in torch.nonzero(hit).flatten().tolist():
            rows[i] = self._edit(rows[i])
        new = torch.tensor(rows, dtype=ids.dtype).to(ids.device)
        return {**cond, "ids": new, "mask": new != 0}

    def _edit(self, row: list[int]) -> list[int]:
        """One id sequence (``<bos>`` + words + padding) with the mitigation applied, same length."""
        length = len(row)
        words = [t for t in row[1:] if t != 0]
        if self.mode == "rc":
            words = [self._randint(N_SPECIAL, self.vocab_size) for _ in words] if self.vocab_size > N_SPECIAL else words
        else:
            for _ in range(INSERTED):
                if self.mode == "rt":
                    if self.vocab_size <= N_SPECIAL:
                        break
                    tok = self._randint(N_SPECIAL, self.vocab_size)
                else:  # cwr
                    if not words:
                        break
                    tok = words[self._randint(0, len(words))]
                words.insert(self._randint(0, len(words) + 1), tok)
        out = ([row[0]] + words)[:length]
        return out + [0] * (length - len(out))


class WenFilter:
    """``keep(model, xt, t, cond, pred)``: which samples of a step stay in the loss (d <= threshold), and d."""

    def __init__(self, threshold: float, empty: dict[str, Any]) -> None:
        self.threshold, self.empty = float(threshold), empty

    def keep(self, model: Any, xt: Any, t: Any, cond: dict[str, Any], pred: Any) -> tuple[Any, Any]:
        import torch

        from .adapter import noise_gap
        from .cond import drop_captions
        from .nets import predict_noise

        with torch.no_grad():
            everyone = torch.ones(xt.shape[0], dtype=torch.bool)
            eps_u = predict_noise(model, xt, t, drop_captions(cond, self.empty, everyone))
            d = noise_gap(pred.detach(), eps_u)
        return d <= self.threshold, d
