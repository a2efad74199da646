"""diffrep: find, explain and reduce training-data replication in image diffusion models.

Python API (mirrors the CLI)::

    import diffrep
    diffrep.index("train_images/", out="train.idx")
    result = diffrep.audit("generations/", index="train.idx", out="audit/", reference="heldout/")
    print(result.summary["replication_rate"])
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import Any


def index(*args: Any, **kwargs: Any) -> Any:
    """Build or update an index directory. See ``diffrep.indexing.build.index``."""
    from .indexing.build import index as _index

    return _index(*args, **kwargs)


def audit(*args: Any, **kwargs: Any) -> Any:
    """Audit generations against an index. See ``diffrep.auditing.run.audit``."""
    from .auditing.run import audit as _audit

    return _audit(*args, **kwargs)


from .errors import (  # noqa: E402
    CalibrationError, DescriptorError, DescriptorMismatchError, DiffrepError, DiffrepIndexError, OutputError,
    SourceError,
)

__all__ = ["__version__", "index", "audit", "DiffrepError", "SourceError", "DescriptorError",
           "DiffrepIndexError", "DescriptorMismatchError", "OutputError", "CalibrationError"]
