"""Crash and fault injection for checkpoint and config saves.

The reliability promise of :func:`mxopt.persist.atomic.replaced` (temporary file in
the same folder, fsync, ``os.replace``, directory fsync), which both
:func:`mxopt.persist.archive.write_archive` and :func:`mxopt.persist.files.write_atomically`
use, is tested by breaking saves on purpose:

* A process killed with SIGKILL during a save, at chosen points (while the archive's bytes
  are written, before the fsync, before and after the rename, before the directory
  fsync) and at random moments (a child saving two updaters alternately, killed after
  seeded random delays spread over a save), must leave the old or the new checkpoint,
  bit for bit, never a broken one. The children are separate Python processes that
  inject ``os.kill(os.getpid(), SIGKILL)`` by monkeypatching ``os``
  functions or the file ``np.savez`` writes to; mxopt is not touched. An in-place
  writer killed the same way must be caught, which shows the check can fail.
* A full disk (a small tmpfs where mounting is allowed; always also RLIMIT_FSIZE in a
  child and a fake file that fails with ENOSPC) must give an OSError that names the file
  and the reason, keep the old file loadable as it was, and leave no temporary file.
* A save must reach the disk before the rename and the rename must be made durable
  (fsync of the file, then of the folder): a kill cannot show a missing fsync, a power
  cut would.

The checkpoints hold a few MB of ADAM state, made with ``load_updater_state_dict`` from
seeded random arrays instead of training steps (a child would spend seconds compiling
kernels). Stray temporary files left by a kill are recorded (``record_property``), not
failed on.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import mxopt
from mxopt.persist import config as persist_config
from mxopt.training.checkpoint import CheckpointError, save_updater

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGKILL, RLIMIT_FSIZE and fsync of folders are POSIX"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run by this process and by every child: build(0) is OLD, build(1) is NEW (different
# options, counters, step counts and about 5 MB of float32 state arrays each).
BUILD = """
import numpy as np
import mxopt
from mxopt.persist.archive import encode_index
from mxopt.training.checkpoint import load_updater_state_dict, updater_state_dict

SHAPES = {"w1": (384, 1024), "w2": (1024, 256), 7: (4096,)}


def build(version):
    rng = np.random.default_rng([2024, version])
    state = mxopt.OptimizationState(batch_size=4)
    updater = mxopt.get_updater(mxopt.ADAM(lr=0.001 * (1 + version), state=state))
    d = updater_state_dict(updater)
    d["optimization_state"].update(
        curr_epoch=version, curr_batch=10 + version, curr_iter=100 + version
    )
    d["states"] = [
        {"index": encode_index(index), "step": 100 * version + i + 1, "skipped": version,
         "memory": {}, "shape": list(shape), "dtype": "float32",
         "arrays": {"mean": rng.standard_normal(shape, dtype=np.float32),
                    "var": rng.random(shape, dtype=np.float32)}}
        for i, (index, shape) in enumerate(SHAPES.items())
    ]
    load_updater_state_dict(updater, d)
    return updater
"""

# A child that imports mxopt once, then for each "point:writer" in argv forks a worker
# that saves OLD to <base>/<writer>-<point>/run.ckpt, then NEW there with a SIGKILL
# injected at `point` ("atomic": mxopt's writer; "in-place": the same writer without a
# temporary file). Forking saves an interpreter start (a second) per point. Prints
# {spec: exit code of the worker} (-9: killed; 3: the point was never reached).
KILL_CHILD = (
    BUILD
    + """
import json, os, signal, stat, sys, tempfile, traceback
from mxopt.training.checkpoint import save_updater

base, specs = sys.argv[1], sys.argv[2:]
old, new = build(0), build(1)
real_fdopen, real_fsync, real_replace = os.fdopen, os.fsync, os.replace


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class Tap:
    # The file np.savez writes the archive to: counts the bytes written through it and,
    # once `limit` is reached, hands the bytes up to it to the OS and dies.
    def __init__(self, file, limit):
        self.file, self.limit, self.written = file, limit, 0

    def write(self, data):
        data = memoryview(data).cast("B")
        if self.limit is not None and self.written + len(data) >= self.limit:
            self.file.write(data[: self.limit - self.written])
            self.file.flush()
            die()
        self.written += len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.file.__exit__(*exc)


def tap(limit):
    taps = []

    def fdopen(*args, **kwargs):
        taps.append(Tap(real_fdopen(*args, **kwargs), limit))
        return taps[-1]

    os.fdopen = fdopen
    return taps


def is_dir(fd):
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def worker(point, writer, path):
    if writer == "in-place":  # the non-atomic writer the check must catch
        real_open = os.open

        def open_in_place(name, flags, *args, **kwargs):  # the temporary file is the target
            if os.fspath(name).endswith(".tmp"):
                return real_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            return real_open(name, flags, *args, **kwargs)

        os.open, os.replace = open_in_place, lambda source, target: None
    save_updater(old, path)
    if point.startswith("written-"):
        # A dry run into another folder measures the bytes one save writes.
        dry = os.path.join(os.path.dirname(path) + "-dry", os.path.basename(path))
        os.makedirs(os.path.dirname(dry))
        taps = tap(None)
        save_updater(new, dry)
        tap(taps[-1].written * int(point[len("written-"):-1]) // 100)
    elif point == "before-fsync":
        os.fsync = lambda fd: die() if not is_dir(fd) else real_fsync(fd)
    elif point == "before-replace":
        os.replace = lambda *args: die()
    elif point == "after-replace":
        os.replace = lambda *args: (real_replace(*args), die())
    elif point == "before-directory-fsync":
        os.fsync = lambda fd: die() if is_dir(fd) else real_fsync(fd)
    elif point != "completed":
        raise ValueError(f"unknown point {point}")
    save_updater(new, path)
    return 0 if point == "completed" else 3


codes = {}
for spec in specs:
    point, writer = spec.split(":")
    path = os.path.join(base, f"{writer}-{point.strip('%')}", "run.ckpt")
    os.makedirs(os.path.dirname(path))
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            code = worker(point, writer, path)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    codes[spec] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""
)

# A child that imports mxopt once, saves OLD to <base>/<trial>/run.ckpt for each trial,
# measures a save and prints "ready <seconds>". For each line "go <trial>" on stdin it
# forks a worker that saves NEW and OLD alternately to that trial's file until it is
# killed (by the test, after a delay) or gives up after 30 s, and prints the worker's
# pid, then its exit code.
LOOP_CHILD = (
    BUILD
    + """
import os, sys, time
from mxopt.training.checkpoint import save_updater

base, trials = sys.argv[1], int(sys.argv[2])
old, new = build(0), build(1)
for trial in range(trials):
    os.makedirs(os.path.join(base, str(trial)))
    save_updater(old, os.path.join(base, str(trial), "run.ckpt"))
durations = []
for _ in range(3):
    start = time.perf_counter()
    save_updater(new, os.path.join(base, "timing.ckpt"))
    durations.append(time.perf_counter() - start)
os.unlink(os.path.join(base, "timing.ckpt"))
print("ready", sorted(durations)[1], flush=True)
for line in sys.stdin:
    path = os.path.join(base, line.split()[1], "run.ckpt")
    pid = os.fork()
    if pid == 0:
        try:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                save_updater(new, path)
                save_updater(old, path)
        finally:
            os._exit(3)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
)

# A child whose files may not grow past a limit (RLIMIT_FSIZE, SIGXFSZ ignored, so a
# write past it fails with EFBIG): saves OLD checkpoint and config, then tries NEW ones.
RLIMIT_CHILD = (
    BUILD
    + """
import json, resource, signal, sys
from mxopt.persist import config
from mxopt.training.checkpoint import save_updater

checkpoint, config_file = sys.argv[1:3]
old, new = build(0), build(1)
save_updater(old, checkpoint)
config.save(old.optimizer, config_file)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
results = {}
for name, limit, save in (
    ("checkpoint", 1 << 20, lambda: save_updater(new, checkpoint)),
    ("config", 64, lambda: config.save(new.optimizer, config_file)),
):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        save()
        results[name] = None
    except BaseException as error:
        results[name] = {"type": type(error).__name__, "oserror": isinstance(error, OSError),
                         "errno": getattr(error, "errno", None), "message": str(error)}
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print(json.dumps(results))
"""
)

_namespace: dict = {}
exec(BUILD, _namespace)
build = _namespace["build"]


def _spawn(script, *args, stdin=None):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(child):
    if child.poll() is None:
        child.kill()
    child.communicate()


def _snapshot(updater):
    """Everything a checkpoint restores, as plain values; arrays as their bytes."""
    return {
        "optimizer": persist_config.to_config(updater.optimizer),
        "optimization_state": repr(updater.optimizer.state),
        "states": {
            index: (
                state.step,
                state.skipped,
                dict(state.memory),
                tuple(state.shape),
                np.dtype(state.dtype).str,
                {
                    name: (array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes())
                    for name, array in state.arrays.items()
                },
            )
            for index, state in updater.states.items()
        },
    }


@pytest.fixture(scope="module")
def expected():
    return {"OLD": _snapshot(build(0)), "NEW": _snapshot(build(1))}


def _which(path, expected):
    """The name in ``expected`` (OLD or NEW) of what the checkpoint at ``path`` holds, bit
    for bit; a failure if it does not load or matches neither."""
    try:
        loaded = _snapshot(mxopt.load_updater(path))
    except Exception as error:
        pytest.fail(f"the checkpoint left by the kill cannot be loaded: {error}")
    for name, snapshot in expected.items():
        if loaded == snapshot:
            return name
    differing = [key for key in loaded if loaded[key] not in (s[key] for s in expected.values())]
    pytest.fail(f"the checkpoint loads but is neither OLD nor NEW (differs in {differing})")


def _strays(folder, keep):
    return sorted(set(os.listdir(folder)) - set(keep))


# -- killed at chosen points -----------------------------------------------------------

#: point -> what the file must hold after a kill there.
KILL_POINTS = {
    "written-0%": "OLD",  # temporary file created, nothing written
    "written-50%": "OLD",  # half the archive's bytes written: a member torn in two
    "written-100%": "OLD",  # every byte handed to the OS, not synced
    "before-fsync": "OLD",
    "before-replace": "OLD",  # synced, not renamed
    "after-replace": "NEW",
    "before-directory-fsync": "NEW",
    "completed": "NEW",  # no kill: the child's NEW is the parent's NEW
}


@pytest.fixture(scope="module")
def killed_saves(tmp_path_factory):
    """``{(point, writer): (path, exit code of the killed worker)}``."""
    base = tmp_path_factory.mktemp("killed")
    specs = [f"{point}:atomic" for point in KILL_POINTS] + ["written-50%:in-place"]
    child = _spawn(KILL_CHILD, base, *specs)
    try:
        stdout, stderr = child.communicate(timeout=120)
    finally:
        _stop(child)
    assert child.returncode == 0, stderr
    codes = json.loads(stdout)
    runs = {}
    for spec in specs:
        point, writer = spec.split(":")
        runs[point, writer] = (
            base / f"{writer}-{point.strip('%')}" / "run.ckpt",
            codes[spec],
            stderr,
        )
    return runs


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_save_killed_at_a_chosen_point_leaves_the_old_or_the_new_file(
    point, killed_saves, expected, record_property
):
    path, code, stderr = killed_saves[point, "atomic"]
    if point == "completed":
        assert code == 0, stderr
    else:
        assert code != 3, f"the save finished without reaching {point}"
        assert code == -signal.SIGKILL, f"the worker failed ({code}): {stderr}"
    assert _which(path, expected) == KILL_POINTS[point]
    # A SIGKILL cannot clean up: a temporary file may stay. Recorded, not failed on.
    strays = _strays(path.parent, [path.name])
    record_property("stray_files", strays)
    assert all(name.startswith(f".{path.name}.") for name in strays), strays
    # The next save still works next to whatever was left.
    save_updater(build(1), path)
    assert _which(path, expected) == "NEW"


def test_the_kill_check_catches_an_in_place_writer(killed_saves):
    # Without a temporary file the same kill leaves a torn checkpoint: the check above
    # would fail for a non-atomic save.
    path, code, stderr = killed_saves["written-50%", "in-place"]
    assert code == -signal.SIGKILL, stderr
    with pytest.raises(CheckpointError):
        mxopt.load_updater(path)


# -- killed at random moments ----------------------------------------------------------

TRIALS = 6


@pytest.fixture(scope="module")
def saving_loop(tmp_path_factory):
    """The LOOP_CHILD, ready: ``(base folder, child, seeded kill delays)``; the delays are
    spread over 1.5 times the duration of a save, measured in the child."""
    base = tmp_path_factory.mktemp("random")
    child = _spawn(LOOP_CHILD, base, TRIALS, stdin=subprocess.PIPE)
    try:
        word, duration = (child.stdout.readline().split() + ["", ""])[:2]
        assert word == "ready", child.communicate()[1]
        rng = np.random.default_rng(20240607)
        delays = [(t + rng.random()) / TRIALS * 1.5 * float(duration) for t in range(TRIALS)]
        yield base, child, delays
    finally:
        _stop(child)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_save_killed_at_a_random_moment_leaves_the_old_or_the_new_file(
    trial, saving_loop, expected, record_property
):
    base, child, delays = saving_loop
    path = base / str(trial) / "run.ckpt"
    child.stdin.write(f"go {trial}\n")
    child.stdin.flush()
    pid = child.stdout.readline()
    assert pid.strip().isdigit(), child.communicate()[1]
    pid = int(pid)
    time.sleep(delays[trial])
    os.kill(pid, signal.SIGKILL)  # the worker saving in a loop, forked by our child
    code = child.stdout.readline()
    assert code == f"{-signal.SIGKILL}\n", f"the worker failed ({code!r})"
    record_property("delay_s", round(delays[trial], 4))
    record_property("holds", _which(path, expected))
    record_property("stray_files", _strays(path.parent, [path.name]))


# -- a full disk -----------------------------------------------------------------------


class _SmallDisk(io.RawIOBase):
    """A file that may not grow past ``room`` bytes: a write beyond is cut short, and one
    starting there fails with ENOSPC, as on a full disk."""

    def __init__(self, raw, room):
        self.raw, self.room = raw, room

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=os.SEEK_SET):
        return self.raw.seek(offset, whence)

    def tell(self):
        return self.raw.tell()

    def fileno(self):
        return self.raw.fileno()

    def write(self, data):
        data = memoryview(data).cast("B")
        space = self.room - self.raw.tell()
        if data and space <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.raw.write(data[:space])

    def close(self):
        if not self.closed:
            self.raw.close()
        super().close()


def _fill_disk(monkeypatch, room=None, fsync=False):
    """Make the next saves fail as on a full disk: after ``room`` bytes of a file, or in
    the fsync of a file."""
    real_fdopen, real_fsync = os.fdopen, os.fsync
    if room is not None:

        def fdopen(fd, mode="r", buffering=-1, encoding=None, *args, **kwargs):
            assert "w" in mode
            raw = _SmallDisk(real_fdopen(fd, "wb", buffering=0), room)
            file = io.BufferedWriter(raw)
            return file if "b" in mode else io.TextIOWrapper(file, encoding=encoding)

        monkeypatch.setattr(os, "fdopen", fdopen)
    if fsync:

        def failing_fsync(fd):
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return real_fsync(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", failing_fsync)


#: Ways a full disk shows up: (kind of file, room in bytes ("size-100": NEW's size less
#: 100) or None, whether the fsync of the file fails, the errno expected).
FULL_DISKS = {
    "checkpoint-no-room": ("checkpoint", 0, False, errno.ENOSPC),
    "checkpoint-half": ("checkpoint", "size/2", False, errno.ENOSPC),
    "checkpoint-last-bytes": ("checkpoint", "size-100", False, errno.ENOSPC),
    "checkpoint-fsync": ("checkpoint", None, True, errno.ENOSPC),
    "config-no-room": ("config", 0, False, errno.ENOSPC),
    "config-half": ("config", "size/2", False, errno.ENOSPC),
}


def _save(kind, version, path):
    if kind == "checkpoint":
        save_updater(build(version), path)
    else:
        persist_config.save(build(version).optimizer, path)


def _check_old_kept(kind, path, expected):
    if kind == "checkpoint":
        assert _which(path, expected) == "OLD"
    else:
        assert path.read_text(encoding="utf-8") == persist_config.dumps(build(0).optimizer)


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    """Size of NEW's checkpoint and config file."""
    folder = tmp_path_factory.mktemp("sizes")
    _save("checkpoint", 1, folder / "run.ckpt")
    _save("config", 1, folder / "optimizer.cfg")
    return {
        "checkpoint": os.path.getsize(folder / "run.ckpt"),
        "config": os.path.getsize(folder / "optimizer.cfg"),
    }


@pytest.fixture
def full_disk_save(tmp_path, monkeypatch, sizes):
    """Save OLD, then NEW on a full disk (fake); ``(kind, path, error, errno)``."""

    def run(name):
        kind, room, fsync, code = FULL_DISKS[name]
        path = tmp_path / ("run.ckpt" if kind == "checkpoint" else "optimizer.cfg")
        _save(kind, 0, path)
        if room == "size-100":
            room = sizes[kind] - 100
        elif room == "size/2":
            room = sizes[kind] // 2
        with monkeypatch.context() as patch:
            _fill_disk(patch, room, fsync)
            with pytest.raises(Exception) as info:
                _save(kind, 1, path)
        return kind, path, info.value, code

    return run


@pytest.mark.parametrize("name", list(FULL_DISKS))
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(
    name, full_disk_save, expected
):
    kind, path, error, code = full_disk_save(name)
    assert isinstance(error, OSError) and error.errno == code, repr(error)
    _check_old_kept(kind, path, expected)
    assert _strays(path.parent, [path.name]) == []


def _check_message(error, path, code):
    """What a user should get: an OSError naming the file (not only a temporary one) and
    what went wrong."""
    assert isinstance(error, OSError), repr(error)
    assert str(path) in str(error), f"the error does not name {path}: {error!r}"
    assert os.strerror(code) in str(error), f"the error does not say why: {error!r}"


@pytest.mark.parametrize("name", list(FULL_DISKS))
def test_a_full_disk_error_names_the_file_and_the_reason(name, full_disk_save):
    kind, path, error, code = full_disk_save(name)
    _check_message(error, path, code)


@pytest.fixture(scope="module")
def rlimit_run(tmp_path_factory):
    """The RLIMIT_FSIZE child: ``(checkpoint, config_file, results)``."""
    folder = tmp_path_factory.mktemp("rlimit")
    checkpoint, config_file = folder / "run.ckpt", folder / "optimizer.cfg"
    child = _spawn(RLIMIT_CHILD, checkpoint, config_file)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    return checkpoint, config_file, json.loads(stdout)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
@pytest.mark.parametrize("kind", ["checkpoint", "config"])
def test_a_file_size_limit_keeps_the_old_file_and_leaves_no_temporary_file(
    kind, rlimit_run, expected
):
    checkpoint, config_file, results = rlimit_run
    path = checkpoint if kind == "checkpoint" else config_file
    result = results[kind]
    assert result is not None, "the save past the file size limit did not fail"
    assert result["oserror"] and result["errno"] == errno.EFBIG, result
    _check_old_kept(kind, path, expected)
    assert _strays(path.parent, [checkpoint.name, config_file.name]) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
@pytest.mark.parametrize("kind", ["checkpoint", "config"])
def test_a_file_size_limit_error_names_the_file_and_the_reason(kind, rlimit_run):
    checkpoint, config_file, results = rlimit_run
    path = checkpoint if kind == "checkpoint" else config_file
    result = results[kind]
    assert result is not None and result["oserror"], result
    assert str(path) in result["message"], f"the error does not name {path}: {result}"
    assert os.strerror(errno.EFBIG) in result["message"], f"the error does not say why: {result}"


@pytest.fixture
def small_tmpfs(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` bytes at a new folder (root on Linux only)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = []

    def mount(size):
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            pytest.skip(f"cannot mount a tmpfs: {error}")
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for path in mounted:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def tmpfs_save(small_tmpfs, sizes):
    """Save OLD on a small tmpfs, fill it, then try NEW: ``(path, error)``."""

    def run(kind):
        if kind == "checkpoint":  # room for OLD, not for NEW's temporary file beside it
            folder = small_tmpfs(sizes["checkpoint"] + (256 << 10))
            path = folder / "run.ckpt"
            _save(kind, 0, path)
        else:  # OLD, then a filler up to the last byte
            folder = small_tmpfs(64 << 10)
            path = folder / "optimizer.cfg"
            _save(kind, 0, path)
            with open(folder / "filler", "wb", buffering=0) as filler:
                with pytest.raises(OSError) as full:
                    while True:
                        filler.write(b"\0" * 4096)
                assert full.value.errno == errno.ENOSPC
        with pytest.raises(Exception) as info:
            _save(kind, 1, path)
        return path, info.value

    return run


@pytest.mark.parametrize("kind", ["checkpoint", "config"])
def test_a_full_tmpfs_keeps_the_old_file_and_leaves_no_temporary_file(kind, tmpfs_save, expected):
    path, error = tmpfs_save(kind)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC, repr(error)
    _check_old_kept(kind, path, expected)
    assert _strays(path.parent, [path.name, "filler"]) == []


@pytest.mark.parametrize("kind", ["checkpoint", "config"])
def test_a_full_tmpfs_error_names_the_file_and_the_reason(kind, tmpfs_save):
    path, error = tmpfs_save(kind)
    _check_message(error, path, errno.ENOSPC)


# -- durability ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["checkpoint", "config"])
def test_the_new_file_is_synced_before_the_rename_and_the_rename_after(kind, tmp_path, monkeypatch):
    # A kill keeps the page cache, a power cut does not: the file's bytes must be on disk
    # before it replaces the old one, and the rename itself must then be synced.
    path = tmp_path / ("run.ckpt" if kind == "checkpoint" else "optimizer.cfg")
    _save(kind, 0, path)
    events = []
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

    def open_(name, flags, *args, **kwargs):
        fd = real_open(name, flags, *args, **kwargs)
        if flags & os.O_CREAT:
            events.append(("created", os.fstat(fd).st_ino))
        return fd

    def fsync(fd):
        info = os.fstat(fd)
        what = "folder" if stat.S_ISDIR(info.st_mode) else "file"
        events.append((f"fsync {what}", info.st_ino, info.st_size))
        return real_fsync(fd)

    def replace(source, target, *args, **kwargs):
        events.append(("replace", os.stat(source).st_ino, os.fspath(target)))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _save(kind, 1, path)
    monkeypatch.undo()

    size, folder = os.path.getsize(path), os.stat(tmp_path).st_ino
    (created,) = [e for e in events if e[0] == "created"]
    (replaced,) = [e for e in events if e[0] == "replace"]
    assert replaced[1:] == (created[1], os.fspath(path)), events
    at = events.index(replaced)
    assert ("fsync file", created[1], size) in events[:at], (
        f"the temporary file is not synced, complete, before the rename: {events}"
    )
    assert any(e[:2] == ("fsync folder", folder) for e in events[at:]), (
        f"the folder is not synced after the rename: {events}"
    )


# -- permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["checkpoint", "config"])
def test_a_save_keeps_the_files_permissions_and_a_new_file_gets_the_umasks(kind, tmp_path):
    # the temporary file must not leave its owner-only mode on the saved file
    path = tmp_path / ("run.ckpt" if kind == "checkpoint" else "optimizer.cfg")
    umask = os.umask(0o022)
    try:
        _save(kind, 0, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # 0o666 less the umask
        os.chmod(path, 0o640)
        _save(kind, 1, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(umask)
