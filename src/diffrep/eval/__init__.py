"""Evaluations built on the library: the labelled demo scenario (``scenario``, ``demo``), the copy-detection
benchmark (``bench/``) and the experiment grids of small diffusion models (``experiment``)."""
