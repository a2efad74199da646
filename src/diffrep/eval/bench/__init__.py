"""The copy-detection benchmark: edits and query generators with ground truth (``edits``, ``generate``), building
a benchmark folder (``make``), ranking descriptors on it (``run``, ``metrics``) and its tables and figures
(``report``)."""
