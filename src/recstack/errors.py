"""Errors raised on bad input. The CLI prints their message and exits non-zero."""


class DataError(ValueError):
    """Bad input data: the message names the file, the column or line, and what was expected."""
