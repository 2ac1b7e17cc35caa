"""Files replaced atomically: a save leaves the old file or the new one, never a torn one.

Checkpoints and config files are written the same way: to a temporary file in the target's
folder (``.NAME.<random>.tmp``), flushed and fsynced, renamed over the target in one step,
and the folder fsynced so that the rename itself survives a power cut. A failed write
(a full disk, a file-size limit, no permission) removes the temporary file, leaves the
target as it was, and raises an :class:`OSError` that names the target and the reason.
A process killed mid-save cannot remove its temporary file: it stays beside the target,
is never read, and may be deleted.

The new file gets the old one's permissions, or a new file's usual ones (``0o666`` less
the umask), as a plain ``open(path, "w")`` would, not the owner-only mode of
:func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat

__all__ = ["replaced"]


@contextlib.contextmanager
def replaced(path, mode: str = "wb", encoding: str | None = None):
    """``with replaced(path) as f: f.write(...)``: ``f`` is the temporary file, which
    replaces ``path`` when the block ends without an error."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        previous = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        previous = None
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        handle = os.open(temporary, flags, 0o666)  # the umask applies, as for any new file
    except OSError as error:
        raise _naming(error, path) from None
    try:
        with os.fdopen(handle, mode, encoding=encoding) as f:
            if previous is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), previous)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _naming(error, path) from error
        raise
    _sync_folder(folder)


def _naming(error: OSError, path: str) -> OSError:
    """The same kind of error (``OSError(errno, ...)`` picks the subclass), naming the
    target and saying that it was left as it was."""
    reason = error.strerror or str(error)
    return OSError(error.errno, f"cannot save {path}: {reason}; the file there is unchanged")


def _sync_folder(folder: str) -> None:
    """Make the rename durable. Some file systems cannot fsync a folder (EINVAL); the file
    itself is on disk by then, so that is not an error."""
    with contextlib.suppress(OSError):
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
