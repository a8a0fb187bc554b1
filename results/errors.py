"""THE base class of the errors a command reports as one sentence (docs/architecture.md).

Every CLI's error boundary catches `ByolBenchError` and prints `error: <sentence>` on stderr with
exit status 1 (a failed run); argparse's usage errors exit with 2. Subclasses live beside the code
that raises them (pretrain/data.py:DataError, pretrain/checkpoint.py:CheckpointError, ...). This
module has no imports so that every package, slurm/ included, may subclass it.
"""


class ByolBenchError(Exception):
    """An error whose message is one sentence that says what to do; never shown with a traceback."""
