"""Errors raised on bad input or an unwritable output. The CLI prints their message and exits 2."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class DataError(ValueError):
    """Bad input data: the message names the file, the column or line, and what was expected."""


class ModalityAbsent(DataError):
    """A multimodal feature of data.mm_feats has no file at all in the download (at no width): an error unless
    data.mm_required is false, where prepare writes it with no vectors (coverage 0) and warns."""


# errno values that mean "this place cannot be written" rather than a bug: reported, never a traceback
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class WriteError(Exception):
    """An output could not be written (full disk, read-only folder, no permission). The message names the
    path, the reason, the free space where it can be read, and the stage whose folder it was."""

    def __init__(self, path: Path, reason: str, stage: str | None = None):
        self.path, self.reason, self.stage = Path(path), reason, stage
        where = f"stage {stage}: " if stage else ""
        super().__init__(
            f"{where}cannot write {self.path}: {reason}{_free_space(self.path)}; nothing of this "
            "write was kept (its temporary copy is removed, the existing output is unchanged)"
        )

    @classmethod
    def of(cls, e: OSError, path: Path | str | None = None, stage: str | None = None) -> WriteError | None:
        """The WriteError an OSError stands for, or None when it is no write failure (then re-raise it)."""
        if e.errno not in WRITE_ERRNOS:
            return None
        return cls(Path(e.filename or path or "."), f"{WRITE_ERRNOS[e.errno]} [Errno {e.errno}]", stage)

    def within(self, tmp: Path, final: Path, stage: str) -> WriteError:
        """The same failure named by the folder it was being built for (not its temporary name)."""
        try:
            path = final / self.path.relative_to(tmp)
        except ValueError:
            path = self.path
        return WriteError(path, self.reason, self.stage or stage)


def _free_space(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return ""
    return f" ({free / 2**30:.2f} GiB free on {probe})"
