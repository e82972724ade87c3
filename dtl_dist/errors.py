"""User-facing errors: a bad input is reported in one line and exits the CLI with code 2."""


class UserInputError(ValueError):
    """A problem with what the user gave us (file, column, row, parameter), not a bug.

    The message names the file, row or column and what was expected; the CLI prints it
    without a traceback and exits with code 2.
    """
