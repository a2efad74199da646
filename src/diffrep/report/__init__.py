"""Rendering of audit results: the self-contained HTML report and its plots (``html.py``, ``plots.py``); the
audit's own tables are written by ``diffrep.auditing.tables``."""
