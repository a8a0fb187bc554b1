"""Importers of other libraries' checkpoints (the authors' BYOL release, MoCo, DINO, SwAV,
solo-learn, lightly, mmselfsup, VISSL, torchvision/timm): `load_foreign(path)` returns the
weights in torchvision key names and their metadata; `python -m evaluate.convert` writes them as
a byol-bench export. Modules: formats.py (the list and detection), safe_load.py (reading without
executing), haiku_byol.py, torch_layouts.py, load.py.
"""

from evaluate.importers.errors import ForeignCheckpointError
from evaluate.importers.formats import FORMATS
from evaluate.importers.load import load_foreign

__all__ = ["FORMATS", "ForeignCheckpointError", "load_foreign"]
