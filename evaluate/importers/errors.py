"""The one error of the importers: a foreign file that cannot be imported, said in one sentence."""

from results.errors import ByolBenchError


class ForeignCheckpointError(ByolBenchError, ValueError):
    """A checkpoint of another library that is refused: unknown layout, unsafe content, damage."""
