"""Exceptions that the CLI turns into one-line messages (see ``pixio_cli.cli``)."""


class PixioError(Exception):
    """Base class: a problem the user can fix; printed without a traceback."""

    exit_code = 2


class InputError(PixioError):
    """An input file or path cannot be used (missing, unreadable, not an image)."""

    exit_code = 1


class RunError(PixioError):
    """The run could not be done as asked (an output another run holds, the machine refusing): a failed run."""

    exit_code = 1


class CheckpointError(PixioError):
    """A checkpoint cannot be found, read, or matched to a model."""


class UsageError(PixioError):
    """Arguments that do not fit together."""


class NotBuiltError(PixioError):
    """A command that exists in the interface but is not implemented yet."""
