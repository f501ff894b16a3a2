"""Errors raised on bad input. The CLI prints their message and exits non-zero."""


class DataError(ValueError):
    """Bad input data: the message names the file, the column or line, and what was expected."""


class ModalityAbsent(DataError):
    """A multimodal feature of data.mm_feats has no file at all in the download (at no width): an error unless
    data.mm_required is false, where prepare writes it with no vectors (coverage 0) and warns."""
