"""Datasets in the official Occupancy Networks layout: the loaders, and the writers run by
``python -m training.data`` (``procedural``: the analytic-shape corpus)."""
