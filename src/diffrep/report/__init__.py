"""Rendering of audit results: tables (CSV/Parquet/JSON) now; HTML and plots build on them."""
