"""The file format of checkpoints: a checksummed NumPy archive, written atomically.

A checkpoint file is a NumPy ``.npz`` archive (a zip of ``.npy`` files) read with
``allow_pickle=False``, so loading it cannot run code. Entry ``header`` is a JSON
document, ``checksum`` a SHA-256 over the header and every array (name, dtype, shape
and bytes); the other entries are the arrays the header refers to by name. Writes go
to a temporary file in the same folder, are flushed to disk, and replace the target
with one atomic rename (:mod:`mxopt.persist.atomic`), so a crash during a save leaves the
previous file intact.

What the header says (an updater's state) is :mod:`mxopt.training.checkpoint`'s
business; this module only guarantees that what is read is what was written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile

import numpy as np

from mxopt.core.checks import shown
from mxopt.persist.atomic import replaced

__all__ = ["CheckpointError", "decode_index", "encode_index", "read_archive", "write_archive"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: truncated, corrupted, newer, or mismatched."""


# -- indices ---------------------------------------------------------------------------


def encode_index(index, where="index"):
    if isinstance(index, bool):
        return {"bool": index}
    if isinstance(index, int):
        return {"int": int(index)}
    if isinstance(index, str):
        return {"str": index}
    if index is None:
        return {"none": None}
    if isinstance(index, float) and math.isfinite(index):
        return {"float": index}
    if isinstance(index, tuple):
        return {"tuple": [encode_index(item, where) for item in index]}
    raise CheckpointError(
        f"{where} {shown(index)} (a {type(index).__name__}) cannot be saved; indices saved in a "
        f"checkpoint must be ints, strings, finite floats, bools, None or tuples of those"
    )


def decode_index(encoded):
    if not isinstance(encoded, dict) or len(encoded) != 1:
        raise CheckpointError(f"bad index record {shown(encoded)}")
    ((kind, value),) = encoded.items()
    decoders = {
        "bool": lambda v: v if isinstance(v, bool) else None,
        "int": lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
        "str": lambda v: v if isinstance(v, str) else None,
        "none": lambda v: None,
        "float": lambda v: v if isinstance(v, float) and math.isfinite(v) else None,
        "tuple": lambda v: tuple(decode_index(item) for item in v) if isinstance(v, list) else None,
    }
    if kind not in decoders:
        raise CheckpointError(f"bad index record {shown(encoded)}")
    decoded = decoders[kind](value)
    if decoded is None and kind != "none":
        raise CheckpointError(f"bad index record {shown(encoded)}")
    return decoded


# -- files -----------------------------------------------------------------------------


def _checksum(header: bytes, arrays: dict) -> str:
    digest = hashlib.sha256(header)
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(key.encode())
        digest.update(array.dtype.str.encode())
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_archive(path, header: dict, arrays: dict) -> None:
    """Write ``header`` (JSON-ready, finite numbers) and ``arrays`` (``{name: ndarray}``) to
    ``path`` atomically (:func:`mxopt.persist.atomic.replaced`)."""
    header_bytes = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    entries = {
        "header": np.frombuffer(header_bytes, dtype=np.uint8),
        "checksum": np.frombuffer(_checksum(header_bytes, arrays).encode(), dtype=np.uint8),
        **arrays,
    }
    with replaced(path) as f:
        np.savez(f, **entries)


def _check_members(path) -> None:
    """Refuse, before anything is decompressed, an archive that mxopt did not write as it
    writes: every member a stored (uncompressed) ``.npy`` file. A compressed member could
    unpack to far more than the file holds (a 1 MiB file to 512 MiB, say)."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise CheckpointError(
                    f"{path}: member {shown(info.filename)} is compressed ({info.compress_size} "
                    f"bytes "
                    f"unpacking to {info.file_size}); mxopt writes stored members only, so this "
                    f"file was not written by mxopt and is refused unread"
                )
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{path}: unexpected member {shown(info.filename)}")


def read_archive(path) -> tuple[dict, dict]:
    """``(header, arrays)`` stored at ``path``, verified against the checksum."""
    try:
        _check_members(os.fspath(path))
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            names = set(archive.files)
            if not {"header", "checksum"} <= names:
                raise CheckpointError(f"{path}: not an mxopt checkpoint (no header)")
            header = archive["header"].tobytes()
            checksum = archive["checksum"].tobytes().decode("ascii", errors="replace")
            arrays = {name: archive[name] for name in names - {"header", "checksum"}}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except Exception as error:  # BadZipFile, EOFError, ValueError, ...: all mean unreadable
        raise CheckpointError(
            f"{path}: the checkpoint is truncated or corrupted and cannot be read "
            f"({type(error).__name__}: {error})"
        ) from None
    if _checksum(header, arrays) != checksum:
        raise CheckpointError(f"{path}: checksum mismatch; the checkpoint is corrupted")
    try:
        return json.loads(header), arrays
    except ValueError as error:
        raise CheckpointError(f"{path}: unreadable header ({error})") from None
