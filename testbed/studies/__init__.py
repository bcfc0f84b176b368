"""Experiments: config -> validated points -> runs (in parallel) -> runs.csv, figures, summary.md."""
