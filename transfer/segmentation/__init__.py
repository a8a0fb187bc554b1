"""Segmentation transfer: `python -m transfer.segmentation` (transfer/segmentation/cli.py)."""
