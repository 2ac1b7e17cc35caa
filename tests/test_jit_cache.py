"""Kernels compile on first use, are cached on disk, and stay cached when the package's own
folder cannot be written (read-only site-packages): Numba then uses a per-user folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs one update of a kernel no other test compiles for float64 + parallel, with the
# package folder made unwritable for Numba's cache (tempfile refuses it, as a read-only
# mount would; the tests run as root, for whom permission bits mean nothing).
SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile
    package = os.path.join({root!r}, "mxopt")
    real = tempfile.TemporaryFile

    def refuse_package(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(package):
            raise PermissionError(13, "read-only file system", dir)
        return real(*args, dir=dir, **kwargs)

    tempfile.TemporaryFile = refuse_package
    import numpy as np
    import mxopt
    from mxopt.kernels import cpu as _cpu
    from mxopt.optimizers.adam import ADAM_AMSGRAD_KERNEL as kernel

    _cpu.entry_point(kernel, np.dtype(np.float64), "segments")
    dispatcher = _cpu._dispatchers[(kernel, "segments")]
    stats = dispatcher.stats
    print(len(stats.cache_hits), len(stats.cache_misses), stats.cache_path)
    """
)


def _run(cache_home):
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home))
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=ROOT)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    hits, misses, path = result.stdout.split()
    return int(hits), int(misses), path


@pytest.mark.slow
def test_cache_falls_back_to_a_user_folder_when_the_package_is_read_only(tmp_path):
    hits, misses, path = _run(tmp_path)
    assert (hits, misses) == (0, 1)  # compiled, and stored...
    assert path.startswith(str(tmp_path))  # ...in the per-user cache, not the package
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)
    hits, misses, _ = _run(tmp_path)
    assert (hits, misses) == (1, 0)  # a fresh process loads it instead of compiling
