"""Rendering of audit results: tables (CSV/Parquet/JSON), the HTML report and its plots."""

#: files ``render_report`` writes into an audit directory (removed when a new audit replaces the results)
REPORT_FILES = ("report.html", "similarity_hist.png", "verdict_hist.png")
