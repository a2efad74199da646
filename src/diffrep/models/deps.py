"""The ``models`` extra: import torch and diffusers, or say how to install them."""
from __future__ import annotations

from typing import Any

from ..errors import DiffrepError

INSTALL_HINT = "pip install 'diffrep[models]'"


def require_models() -> tuple[Any, Any]:
    """Return the ``(torch, diffusers)`` modules; DiffrepError naming the extra when one is missing."""
    try:
        import torch
    except ImportError as exc:
        raise DiffrepError(f"training and sampling need torch, which is not installed ({exc}). "
                           f"Install the models extra: {INSTALL_HINT}") from None
    try:
        import diffusers
    except ImportError as exc:
        raise DiffrepError(f"training and sampling need diffusers, which is not installed ({exc}). "
                           f"Install the models extra: {INSTALL_HINT}") from None
    return torch, diffusers


def resolve_device(device: str) -> Any:
    """``cpu`` or ``cuda[:N]`` as a torch.device; DiffrepError when CUDA is asked for and absent."""
    torch, _ = require_models()
    name = (device or "cpu").strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DiffrepError(f"--device {device}: CUDA is not available in this torch build or machine "
                               f"(torch {torch.__version__}). Use --device cpu, or install a CUDA build of torch.")
        return torch.device(name)
    raise DiffrepError(f"--device {device!r} is not supported; use cpu or cuda (cuda:N for a given GPU)")
