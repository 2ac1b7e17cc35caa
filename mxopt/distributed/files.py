"""Checkpoints of sharded updaters: one file per rank and a manifest, loadable on any
number of ranks, and :func:`consolidate` into one ordinary checkpoint.

A save into ``folder`` writes ``shard-<id>-<rank>-of-<N>.ckpt`` on every rank (an ordinary
checkpoint of that rank's share: :func:`mxopt.training.checkpoint.save_updater`, atomic and
checksummed), then, once every rank has written its file, rank 0 replaces ``manifest.json``
(atomically) to name the new files, and deletes the files no manifest names. A save killed
at any point leaves the old manifest and the old files it names, or the new ones.

The folder must be one that every rank sees (a shared file system across machines).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from mxopt.core.version import __version__
from mxopt.distributed.collectives import together
from mxopt.distributed.transport import collectives_for
from mxopt.persist.archive import CheckpointError, decode_index, encode_index
from mxopt.persist.files import write_atomically
from mxopt.training.checkpoint import (
    build_optimizer,
    load_updater_state_dict,
    read_checkpoint,
    save_updater,
    write_checkpoint,
)

__all__ = ["MANIFEST", "consolidate", "load_sharded", "read_sharded", "save_sharded"]

MANIFEST = "manifest.json"
FORMAT, VERSION = "mxopt.sharded", 1
_SHARD_NAME = re.compile(r"shard-[0-9a-f]{12}-\d+-of-\d+\.ckpt")


def save_sharded(sharded, folder) -> None:
    """Every rank writes its share; rank 0 then writes the manifest (see the module)."""
    collectives = sharded.collectives
    rank, size = collectives.rank, collectives.size
    folder = os.fspath(folder)
    # one id for this save, from rank 0: the files of different saves never collide
    proposal = float(int.from_bytes(os.urandom(6), "big")) if rank == 0 else 0.0
    save_id = int(collectives.all_gather_values(np.array([proposal]), [1] * size)[0])
    names = [f"shard-{save_id:012x}-{r}-of-{size}.ckpt" for r in range(size)]
    mine = os.path.join(folder, names[rank])

    def write_share():
        os.makedirs(folder, exist_ok=True)
        save_updater(sharded.updater, mine)

    _together(collectives, write_share, "saving its share", cleanup=lambda: _remove(mine))

    def write_manifest():
        if rank != 0:
            return
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "mxopt": __version__,
            "ranks": size,
            "files": names,
            "indices": [encode_index(i) for i in sharded.buffer.indices],
        }
        write_atomically(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1))

    _together(collectives, write_manifest, "writing the manifest", cleanup=lambda: _remove(mine))
    if rank == 0:  # the files of earlier saves, no longer named by the manifest
        for name in os.listdir(folder):
            if _SHARD_NAME.fullmatch(name) and name not in names:
                _remove(os.path.join(folder, name))


def read_sharded(folder) -> tuple[dict, list]:
    """``(state_dict, indices)``: the shares of a sharded checkpoint merged into one
    ordinary state dict (the indices in the model's order), verified."""
    folder = os.fspath(folder)
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder}: no readable {MANIFEST} ({error})") from None
    if not (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and manifest.get("version") == VERSION
        and isinstance(manifest.get("files"), list)
        and all(isinstance(n, str) and _SHARD_NAME.fullmatch(n) for n in manifest["files"])
        and isinstance(manifest.get("indices"), list)
    ):
        raise CheckpointError(f"{folder}/{MANIFEST}: not a manifest of mxopt {FORMAT} v{VERSION}")
    indices = [decode_index(i) for i in manifest["indices"]]
    merged, states = None, []
    for name in manifest["files"]:
        d = read_checkpoint(os.path.join(folder, name))
        if merged is None:
            merged = d
        elif d["optimizer_type"] != merged["optimizer_type"]:
            raise CheckpointError(f"{folder}/{name}: holds a {d['optimizer_type']}, the first "
                                  f"share a {merged['optimizer_type']}")  # fmt: skip
        states.extend(d["states"])
    known = set(indices)
    saved = [decode_index(s["index"]) for s in states]
    stray = [i for i in saved if i not in known]
    if stray or len(set(saved)) != len(saved):
        raise CheckpointError(f"{folder}: the shares hold states of indices the manifest does "
                              f"not list, or one index twice: {stray[:5]}")  # fmt: skip
    position = {index: k for k, index in enumerate(indices)}
    states.sort(key=lambda s: position[decode_index(s["index"])])
    merged["states"] = states
    return merged, indices


def load_sharded(cls, folder, buffer, comm=None, *, optimizer=None, **options):
    """A :class:`~mxopt.distributed.ShardedUpdater` continuing from ``folder`` on this job's
    ranks (any number of them): every rank reads the shares and keeps its own."""
    collectives = collectives_for(comm, buffer.backend)

    def read_and_check():
        d, indices = read_sharded(folder)
        if list(indices) != list(buffer.indices):
            raise CheckpointError(
                f"{os.fspath(folder)}: saved for indices {indices[:5]}... but the buffer holds "
                f"{list(buffer.indices)[:5]}... (the same indices in the same order are needed)"
            )
        return d, build_optimizer(d, optimizer)

    d, built = _together(collectives, read_and_check, "reading the checkpoint")
    sharded = cls(built, buffer, collectives, **options)
    mine = set(sharded.indices)
    d["states"] = [s for s in d["states"] if decode_index(s["index"]) in mine]

    def restore():
        load_updater_state_dict(sharded.updater, d, weights=sharded.share.weights,
                                optimizer=built)  # fmt: skip

    _together(sharded.collectives, restore, "loading its share")
    return sharded


def consolidate(folder, path) -> None:
    """Write the sharded checkpoint in ``folder`` as one ordinary checkpoint at ``path``
    (:func:`mxopt.load_updater` reads it; one process, no MPI)."""
    d, _ = read_sharded(folder)
    write_checkpoint(path, d)


def _together(collectives, work, what: str, cleanup=None):
    """:func:`~mxopt.distributed.collectives.together`, refused with a CheckpointError."""
    refusal = lambda ranks: CheckpointError(f"rank(s) {ranks} failed {what}")  # noqa: E731
    return together(collectives, work, refusal, cleanup)


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
