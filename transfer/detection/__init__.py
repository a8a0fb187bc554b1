"""Detection transfer: `python -m transfer.detection` (transfer/detection/cli.py)."""
