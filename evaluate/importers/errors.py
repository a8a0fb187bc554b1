"""The one error of the importers: a foreign file that cannot be imported, said in one sentence."""

from pretrain.checkpoint import CheckpointError


class ForeignCheckpointError(CheckpointError):
    """A checkpoint of another library that is refused: unknown layout, unsafe content, damage.
    A CheckpointError (a ByolBenchError), as every --ckpt refusal of evaluate/features.py."""
