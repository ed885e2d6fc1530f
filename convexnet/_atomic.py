"""Atomic file writes: a file convexnet writes is either the old one or the complete new one.

:func:`atomic_write` hands out a temporary file in the target's folder; only when the writer
returns is it flushed, synced to disk and renamed over the target with :func:`os.replace` (atomic
on POSIX and Windows when both names are on one file system, which the shared folder guarantees).
A failure or an exception before that removes the temporary file and leaves the target as it was;
a kill (power loss, ``SIGKILL``) can leave a stray ``.<name>.*.tmp`` file next to the target, never
a half-written target.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path):
    """Open a temporary binary file that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace. Its folder must exist. A symbolic link at ``path`` is
        replaced by the new file (the file it pointed to is left alone).

    Yields
    ------
    file object
        Opened for binary writing; write the whole content, do not close it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_write(target) as handle:
    ...     _ = handle.write(b"complete")
    >>> target.read_bytes()
    b'complete'
    """
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file readable by its owner only; give it the mode the target had,
        # or the one a plain open() would have given a new file.
        os.chmod(temporary, _mode_of(target))
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_folder(target.parent)


def _mode_of(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        # The umask can only be read by setting it; set it straight back.
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _sync_folder(folder: Path) -> None:
    # The rename lives in the folder's entry table: sync it so that the new name survives a power
    # loss. Not possible on Windows (folders cannot be opened) or on some file systems.
    if not hasattr(os, "O_DIRECTORY"):
        return
    with suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
