"""Standalone training and evaluation of the reconstruction models (imports backend)."""
