"""mxopt.distributed: ShardedUpdater, shares, sharded checkpoints.

World of one, in this process:

* ``ShardedUpdater(opt, buffer, LocalCollectives())`` has the bits of
  ``get_updater(opt).update_buffer(buffer)`` (weights after every step, every state array,
  step and skip counts, averages) for every case of tests/cases.py: plain; with
  ``max_grad_norm`` and EMA averaging (``averaged_weights()``); ``nonfinite="skip"`` with
  non-finite gradients (the first step and a later one: False returned, skips counted);
  ``nonfinite="apply"``; learning-rate multipliers, groups, a frozen group; and (for a
  subset of the cases) a frozen tensor's gradient left out of the global norm and of the
  non-finite check; without mpi4py, ``comm=None`` is a world of one;
* :func:`shares`: contiguous runs of whole tensors covering them all, each boundary a
  tensor boundary nearest to ``k * total / parts`` (the docstring's "as close as the
  tensor boundaries allow"; Hypothesis), hence no share above ``total / parts +
  max(sizes)`` and none above the brute-force optimum plus ``max(sizes)``; empty shares
  (more ranks than tensors, zero-size tensors);
* errors: a buffer that is not a ParameterBuffer, an unknown ``reduce``, averaged weights
  without averaging, loading a checkpoint into a buffer of other indices.

MPI jobs, ``mpiexec -n N python -m mpi4py tests/distributed_worker.py`` for N = 2, 3, 4:
one job per N runs every scenario of tests/distributed_worker.py and writes each rank's
results; the tests here compare them with one process that updates the whole model
(``update_buffer``) from the rank-ordered sum of the ranks' gradients:

* ``reduce="ordered"``: the bits of one process on every rank for every case (weights,
  states, shares as :func:`shares` makes them, each rank holding the states of its share
  only); the default ``reduce="sum"``: the same bits on every rank, and the bits of one
  process for gradients whose sums are exact in any order (every case);
* global clipping, ``nonfinite="skip"`` (a NaN or inf from one rank: every rank skips,
  the skip counts agree), ``"raise"`` (every rank raises FloatingPointError and no weight
  changes), ``"apply"``, a DynamicLossScaler (the same decisions and scales everywhere),
  EMA and Polyak averages, groups and freezing (also with clipping), ranks that own no
  tensor;
* checkpoints saved (twice, into one folder) on 3 ranks, loaded on 2, 3 and 4 ranks and
  in this process, and consolidated into one file that :func:`mxopt.load_updater` reads:
  all continue with the bits of the uninterrupted run;
* one rank failing before the update: every rank raises (the others a RuntimeError naming
  it), no weight or state changes, and the next step goes on; failing in its update:
  every rank raises; an exception outside mxopt on one rank under ``python -m mpi4py``
  ends the job with a non-zero status (no hang).

The MPI tests are skipped without mpi4py or mpiexec. The jobs start in a thread when the
module starts, so that they run while this process runs the world-of-one tests; each
runs in a session of its own, killed (with every process under it) at its timeout or
when the module ends. They get one thread per rank, MPICH ranks that sleep rather than
spin while they wait (more ranks than cores), and a bytecode cache in pytest's temporary
folder (each rank imports NumPy, Numba and mxopt; compiling their sources again in every
rank costs seconds).
"""

from __future__ import annotations

import fractions
import functools
import importlib.util
import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxopt
from mxopt.distributed import LocalCollectives, ShardedUpdater, consolidate, shares
from tests import distributed_worker as worker
from tests.cases import CASES, make_optimizer
from tests.distributed_worker import (
    CHECKPOINT_AT,
    CHECKPOINTS,
    SHAPES,
    SUBSET,
    TINY,
    Scenario,
    checkpoint_scenario,
    continue_run,
    run_reference,
    run_sharded,
)

ROOT = Path(__file__).resolve().parent.parent
RANKS = (2, 3, 4)
JOB_TIMEOUT = 300  # seconds for one MPI job (about 10 s on two idle cores)
CASE_IDS = [case.id for case in CASES]

# -- comparing outcomes -----------------------------------------------------------------------


def bits(array):
    array = np.ascontiguousarray(array)
    return array.view({4: np.uint32, 8: np.uint64}[array.dtype.itemsize])


def same_bits(actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    differ = np.flatnonzero(bits(actual).ravel() != bits(expected).ravel())
    assert not differ.size, (
        f"{what}: {differ.size} of {actual.size} values differ, e.g. at {differ[:3].tolist()}: "
        f"{actual.ravel()[differ[:3]].tolist()} != {expected.ravel()[differ[:3]].tolist()}"
    )


def kind(outcome) -> object:
    """True/False for a step applied or skipped, else the exception's type name."""
    return outcome if isinstance(outcome, bool) else outcome.split(":", 1)[0]


def assert_matches(got: dict, reference: dict, what: str) -> None:
    """A sharded run (one rank's outcome) against the reference run: every step's outcome
    and weights, the states this rank holds, the scaler's history, the averages."""
    assert "error" not in got, f"{what}: the run failed:\n{got['error']}"
    assert [kind(o) for o in got["outcomes"]] == [kind(o) for o in reference["outcomes"]], (
        f"{what}: outcomes {got['outcomes']} != {reference['outcomes']}"
    )
    for step, (w, r) in enumerate(zip(got["weights"], reference["weights"], strict=True)):
        same_bits(w, r, f"{what}: weights after step {step}")
    assert got["scaler"] == reference["scaler"], f"{what}: loss scaler history"
    held = got.get("indices", list(reference["states"]))
    assert set(got["states"]) <= set(held), f"{what}: states of indices of other shares"
    for index in held:
        assert (index in got["states"]) == (index in reference["states"]), f"{what}: {index}"
        if index not in got["states"]:
            continue
        mine, theirs = got["states"][index], reference["states"][index]
        for key in ("step", "skipped", "memory"):
            assert mine[key] == theirs[key], f"{what}: index {index} {key}"
        assert mine["arrays"].keys() == theirs["arrays"].keys(), f"{what}: index {index}"
        for name, array in theirs["arrays"].items():
            same_bits(mine["arrays"][name], array, f"{what}: index {index} state {name}")
    if "average" in reference:
        same_bits(got["average"], reference["average"], f"{what}: averaged weights")


def assert_all_ranks_match(results: dict, name: str, reference: dict, n: int) -> None:
    """Every rank's outcome of scenario ``name`` matches the reference; the ranks' shares
    are those of shares() and together hold the reference's states."""
    ranks = [results[r][name] for r in range(n)]
    for r, got in enumerate(ranks):
        assert_matches(got, reference, f"{name}, rank {r} of {n}")
    shapes = SCENARIOS[name].shapes
    expected = shares([int(np.prod(s)) for s in shapes.values()], n)
    indices = list(shapes)
    for r, got in enumerate(ranks):
        assert got["size"] == n
        assert [tuple(x) for x in got["index_ranges"]] == expected
        first, last = expected[r]
        assert got["indices"] == indices[first:last]
    held = [index for got in ranks for index in got["states"]]
    assert sorted(held) == sorted(reference["states"]), f"{name}: the ranks' states"


# -- world of one -----------------------------------------------------------------------------

LOCAL = {
    "plain": {},
    "clip-ema": {"options": {"max_grad_norm": 0.5, "averaging": ("EMA", 0.9)}, "scale": 5.0},
    # a first step skipped (its new states kept, counted), then another
    "skip": {
        "options": {"nonfinite": "skip"},
        "steps": 4,
        "bad": {0: (0, "a", 0, np.inf), 2: (0, "d", 2, np.nan)},
    },
    "groups": {"groups": True, "steps": 4},
    "apply": {"options": {"nonfinite": "apply"}, "bad": {1: (0, "f", 2, np.nan)}},
}
#: group 0 ("a", "b") is frozen at step 1: its gradient must count neither in the global
#: norm nor in the non-finite check, as in update_buffer
FROZEN = {
    "groups-clip": {"options": {"max_grad_norm": 0.5}, "groups": True, "steps": 4, "scale": 5.0},
    "groups-frozen-nan": {
        "options": {"nonfinite": "skip"},
        "groups": True,
        "steps": 4,
        "bad": {1: (0, "a", 0, np.nan)},
    },
}
#: optimizers whose steps do not depend on the gradients' scale
SIGN_BASED = ("Lion", "Rprop")


def world_of_one(scenario: Scenario) -> tuple[dict, dict]:
    reference = run_reference(scenario, 1)
    got = run_sharded(scenario, LocalCollectives())
    assert_matches(got, reference, scenario.name)
    assert got["indices"] == list(SHAPES) and got["index_ranges"] == [(0, len(SHAPES))]
    return got, reference


@pytest.mark.parametrize("config", list(LOCAL))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_world_of_one_is_update_buffer(case, config):
    scenario = Scenario(f"local-{config}/{case.id}", case.id, **LOCAL[config])
    got, reference = world_of_one(scenario)
    outcomes = reference["outcomes"]
    if config == "skip":  # the scenario does skip two steps, and counts them
        assert outcomes == [False, True, False, True]
        assert all(s["skipped"] == 2 for s in got["states"].values())
    else:
        assert all(o is True for o in outcomes)
    if config == "groups":  # "a" and "b" frozen at step 1
        end = SHAPES["a"][0] * SHAPES["a"][1] + SHAPES["b"][0]
        assert (reference["weights"][1][:end] == reference["weights"][0][:end]).all()
        assert (reference["weights"][2][:end] != reference["weights"][1][:end]).any()
    if config == "clip-ema" and case.optimizer not in SIGN_BASED:  # and does clip
        unclipped = Scenario(scenario.name, case.id, {"averaging": ("EMA", 0.9)}, scale=5.0)
        weights = run_reference(unclipped, 1)["weights"]
        assert any((a != b).any() for a, b in zip(weights, got["weights"], strict=True))


@pytest.mark.parametrize("config", list(FROZEN))
@pytest.mark.parametrize("case", SUBSET)
def test_a_world_of_one_ignores_frozen_gradients(case, config):
    world_of_one(Scenario(f"local-{config}/{case}", case, **FROZEN[config]))


def test_without_mpi4py_the_default_comm_is_a_world_of_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    state = mxopt.OptimizationState(batch_size=2)
    state.begin_epoch()
    buffer = mxopt.ParameterBuffer({"w": (3,), "b": (2,)})
    updater = ShardedUpdater(mxopt.ADAM(state=state), buffer)
    assert isinstance(updater.collectives, LocalCollectives)
    assert (updater.rank, updater.size) == (0, 1)
    reference_buffer = mxopt.ParameterBuffer({"w": (3,), "b": (2,)})
    reference = mxopt.get_updater(mxopt.ADAM(state=state))
    for step in range(3):
        state.begin_batch()
        grad = np.linspace(-1, 1 + step, 5, dtype=np.float32)
        buffer.grad[...] = reference_buffer.grad[...] = grad
        assert updater.step() and reference.update_buffer(reference_buffer)
    same_bits(buffer.weight, reference_buffer.weight, "weights")


def test_bad_arguments():
    state = mxopt.OptimizationState(batch_size=1)
    buffer = mxopt.ParameterBuffer({"w": (3,)})
    for bad in ({"w": np.zeros(3, np.float32)}, [np.zeros(3, np.float32)], buffer.weight):
        with pytest.raises(TypeError, match="buffer must be a mxopt.ParameterBuffer"):
            ShardedUpdater(mxopt.SGD(state=state), bad, LocalCollectives())
    for bad in ("mean", "SUM", None, 1):
        with pytest.raises(ValueError, match="reduce must be one of"):
            ShardedUpdater(mxopt.SGD(state=state), buffer, LocalCollectives(), reduce=bad)
    updater = ShardedUpdater(mxopt.SGD(state=state), buffer, LocalCollectives())
    with pytest.raises(ValueError, match="no averaging"):
        updater.averaged_weights()


# -- shares -----------------------------------------------------------------------------------


def check_shares(sizes, parts) -> list:
    """The properties every split has (see shares' docstring); returns it."""
    runs = shares(sizes, parts)
    count = len(sizes)
    assert len(runs) == parts
    assert runs[0][0] == 0 and runs[-1][1] == count  # covers every tensor...
    for (_, last), (first, _) in itertools.pairwise(runs):
        assert last == first  # ...contiguously, each once (whole tensors: index runs)
    assert all(first <= last for first, last in runs)
    prefix = [0, *itertools.accumulate(sizes)]
    total = prefix[-1]
    for k in range(1, parts):  # each boundary a tensor boundary nearest to k * total / parts
        target = fractions.Fraction(total * k, parts)
        nearest = min(abs(p - target) for p in prefix)
        assert abs(prefix[runs[k][0]] - target) == nearest, (sizes, parts, runs, k)
    return runs


def share_sizes(sizes, runs) -> list:
    return [sum(sizes[first:last]) for first, last in runs]


def best_max_share(sizes, parts) -> int:
    """The smallest possible largest share, by trying every split."""
    count = len(sizes)
    best = sum(sizes)
    for cuts in itertools.combinations_with_replacement(range(count + 1), parts - 1):
        bounds = [0, *cuts, count]
        best = min(best, max(sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)))
    return best


def test_shares_examples():
    assert shares([], 3) == [(0, 0)] * 3
    assert shares([10], 1) == [(0, 1)]
    assert share_sizes([10], check_shares([10], 3)) == [0, 10, 0]  # more ranks than tensors
    assert shares([1, 1, 1, 1], 2) == [(0, 2), (2, 4)]
    assert shares([4, 4, 4, 4, 4, 4], 3) == [(0, 2), (2, 4), (4, 6)]
    assert share_sizes([100, 1, 1, 1], check_shares([100, 1, 1, 1], 2)) == [100, 3]
    assert share_sizes([0, 0, 6, 0, 6, 0], check_shares([0, 0, 6, 0, 6, 0], 2)) == [6, 6]
    assert share_sizes([0, 0, 0], check_shares([0, 0, 0], 2)) == [0, 0]
    sizes = [int(np.prod(s)) for s in SHAPES.values()]
    for parts in range(1, 10):
        check_shares(sizes, parts)
    assert share_sizes([3, 4], check_shares([3, 4], 4)) == [3, 0, 4, 0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=6), st.integers(1, 5))
def test_shares_are_nearest_boundaries_and_balanced(sizes, parts):
    runs = check_shares(sizes, parts)
    largest = max(share_sizes(sizes, runs))
    best = best_max_share(sizes, parts)
    # each boundary is within half a tensor of its target: a share exceeds total / parts by
    # at most half of each of the two tensors at its ends
    assert best <= largest <= sum(sizes) / parts + max(sizes, default=0)
    assert largest <= best + max(sizes, default=0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10**9), max_size=50), st.integers(1, 64))
def test_shares_of_large_models(sizes, parts):
    check_shares(sizes, parts)


# -- MPI jobs ---------------------------------------------------------------------------------


def find_mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
NO_MPI = importlib.util.find_spec("mpi4py") is None or MPIEXEC is None


def needs_mpi(test):
    """Skipped without MPI; with pytest-xdist's ``--dist loadgroup``, on one worker."""
    test = pytest.mark.skipif(NO_MPI, reason="needs mpi4py and mpiexec")(test)
    return pytest.mark.xdist_group("mpi")(test)


def job_environment(cache: Path) -> dict:
    env = dict(os.environ)
    env.update(
        NUMBA_NUM_THREADS="1",
        MXOPT_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPYCACHEPREFIX=str(cache),
        # MPICH: ranks waiting in a collective sleep rather than spin (ranks outnumber cores)
        MPIR_CVAR_ENABLE_HEAVY_YIELD="1",
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the cache is ours, in pytest's tmp folder
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (Linux's /proc; none elsewhere). MPICH's process
    proxies start sessions of their own: killing mpiexec's group does not reach them."""
    children: dict = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(process) -> None:
    """SIGKILL to every process under mpiexec (its own stays: it ends when they do)."""
    for pid in descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_job(process) -> str:
    """SIGKILL to every process under mpiexec, then (if it did not end then) to mpiexec's
    process group; returns what mpiexec wrote."""
    kill_tree(process)
    try:
        return process.communicate(timeout=5)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.communicate()[0]


def launch(n: int, args, env: dict, timeout: float, running: list | None = None):
    """``(returncode, output, seconds)`` of ``mpiexec -n n python -m mpi4py worker args``,
    in a session of its own, killed whole at the timeout (returncode None). The process
    is appended to ``running`` while it runs."""
    command = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", worker.__file__, *args]
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = [] if running is None else running
    running.append(process)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = kill_job(process)
        return None, output, time.monotonic() - start
    finally:
        running.remove(process)
    return process.returncode, output, time.monotonic() - start


class Jobs:
    """The MPI jobs, one per number of ranks, run one after the other in a thread (the
    3-rank job first: the others load its checkpoints), started as the module starts for
    the numbers of ranks its selected tests need, so that they run while this process
    runs the other tests."""

    ORDER = (3, 2, 4)

    def __init__(self, folder: Path):
        self.folder = folder
        self.checkpoints = folder / "checkpoints"
        self.env = job_environment(folder / "pycache")
        self.results: dict = {}
        self.done: dict = {}  # n -> Event, once planned
        self.plan: list = []
        self.running: list = []
        self.lock = threading.Lock()
        self.thread = None
        self.closed = False

    def start(self, ranks) -> None:
        with self.lock:
            for n in sorted({3, *ranks}, key=self.ORDER.index):
                if n not in self.done:
                    self.done[n] = threading.Event()
                    self.plan.append(n)
            if self.plan and self.thread is None:
                self.thread = threading.Thread(target=self.run_all, daemon=True)
                self.thread.start()

    def run_all(self) -> None:
        while True:
            with self.lock:
                if not self.plan:
                    self.thread = None
                    return
                n = self.plan.pop(0)
            try:
                self.results[n] = self.run(n)
            except Exception as error:
                self.results[n] = f"mpiexec -n {n}: {error!r}"
            self.done[n].set()

    def run(self, n: int):
        if self.closed:
            return "not run: the module ended"
        out = self.folder / f"job{n}"
        out.mkdir()
        args = ["main", str(out), str(self.checkpoints)]
        code, output, seconds = launch(n, args, self.env, JOB_TIMEOUT, self.running)
        files = [out / f"rank{r}.pkl" for r in range(n)]
        if code != 0 or not all(f.exists() for f in files):
            return f"mpiexec -n {n}: status {code} after {seconds:.0f} s\n{output[-5000:]}"
        return {r: pickle.loads(f.read_bytes()) for r, f in enumerate(files)}

    def __call__(self, n: int) -> dict:
        self.start({n})
        self.done[n].wait()
        result = self.results[n]
        if isinstance(result, str):
            pytest.fail(result)
        return result

    def close(self) -> None:
        """Kill the job still running (its thread reads what it wrote, and ends)."""
        self.closed = True
        for process in list(self.running):
            kill_tree(process)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        thread = self.thread
        if thread is not None:
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    jobs = Jobs(tmp_path_factory.mktemp("mpi"))
    yield jobs
    jobs.close()


@pytest.fixture(scope="module", autouse=True)
def start_the_jobs_early(request):
    """Start the MPI jobs that the selected tests of this module need, with the module."""
    module = sys.modules[__name__]
    ranks = {
        getattr(item, "callspec", None) and item.callspec.params.get("n", 3) or 3
        for item in request.session.items
        if "jobs" in getattr(item, "fixturenames", ()) and getattr(item, "module", None) is module
    }
    if ranks and not NO_MPI:
        request.getfixturevalue("jobs").start(ranks)


SCENARIOS = {scenario.name: scenario for scenario in worker.mpi_scenarios()}


@functools.cache
def reference_of(name: str, n: int) -> dict:
    return run_reference(SCENARIOS[name], n)


@needs_mpi
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", RANKS)
def test_ordered_reduction_gives_the_bits_of_one_process(jobs, n, case):
    name = f"ordered/{case.id}"
    reference = reference_of(name, n)
    assert all(o is True for o in reference["outcomes"])
    assert_all_ranks_match(jobs(n), name, reference, n)


@needs_mpi
@pytest.mark.parametrize("n", RANKS)
def test_sum_reduction_gives_the_same_weights_on_every_rank(jobs, n):
    """Every case with the default reduce="sum": the same bits on every rank; gradients
    whose sums are exact (multiples of 1/64) give the bits of one process."""
    results, failures = jobs(n), []
    for case in CASES:
        name = f"sum/{case.id}"
        ranks = [results[r][name] for r in range(n)]
        try:
            for got in ranks[1:]:
                for step, (w, w0) in enumerate(
                    zip(got["weights"], ranks[0]["weights"], strict=True)
                ):
                    same_bits(w, w0, f"{name}: rank 0 and another after step {step}")
            assert_all_ranks_match(results, name, reference_of(name, n), n)
        except AssertionError as error:
            failures.append(str(error).splitlines()[0][:300])
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_sum_reduction_of_any_gradients_gives_the_same_weights_on_every_rank(jobs, n, case):
    """Normal gradients: MPI's sum need not be the rank order's, but every rank gets the
    same bits (and close to the rank order's)."""
    name = f"sum-random/{case}"
    reference = reference_of(name, n)
    ranks = [jobs(n)[r][name] for r in range(n)]
    for r, got in enumerate(ranks):
        assert "error" not in got, got["error"]
        assert got["outcomes"] == [True] * len(reference["outcomes"]), got["outcomes"]
        for step, weights in enumerate(got["weights"]):
            same_bits(weights, ranks[0]["weights"][step], f"{name}: ranks 0 and {r}, step {step}")
            np.testing.assert_allclose(weights, reference["weights"][step], rtol=1e-4, atol=1e-5)


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("reduce", ["ordered", "sum"])
@pytest.mark.parametrize("n", RANKS)
def test_global_clipping(jobs, n, reduce, case):
    name = f"clip/{case}" if reduce == "ordered" else f"clip-sum/{case}"
    reference = reference_of(name, n)
    assert_all_ranks_match(jobs(n), name, reference, n)
    if case.split("-")[0] not in SIGN_BASED:  # the scenario does clip
        scenario = SCENARIOS[name]
        unclipped = Scenario(name, case, grads=scenario.grads, scale=scenario.scale)
        weights = run_reference(unclipped, n)["weights"]
        assert any((a != b).any() for a, b in zip(weights, reference["weights"], strict=True))


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_a_nan_on_one_rank_makes_every_rank_skip(jobs, n, case):
    for name, skipped_step in ((f"skip/{case}", 1), (f"skip-first/{case}", 0)):
        reference = reference_of(name, n)
        assert reference["outcomes"][skipped_step] is False
        assert_all_ranks_match(jobs(n), name, reference, n)
        counts = {i: s["skipped"] for r in range(n) for i, s in jobs(n)[r][name]["states"].items()}
        assert counts == {i: 1 for i in reference["states"]}


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_a_nan_on_one_rank_makes_every_rank_raise(jobs, n, case):
    name = f"raise/{case}"
    reference = reference_of(name, n)
    assert kind(reference["outcomes"][1]) == "FloatingPointError"
    assert_all_ranks_match(jobs(n), name, reference, n)
    for r in range(n):
        got = jobs(n)[r][name]
        assert got["outcomes"][1].startswith("FloatingPointError: index 'd'"), got["outcomes"]
        same_bits(got["weights"][1], got["weights"][0], f"{name}, rank {r}: the failed step")


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_nonfinite_apply_applies_on_every_rank(jobs, n, case):
    name = f"apply/{case}"
    reference = reference_of(name, n)
    assert reference["outcomes"] == [True] * 3
    assert_all_ranks_match(jobs(n), name, reference, n)


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_loss_scaler_decisions_agree(jobs, n, case):
    name = f"scaler/{case}"
    reference = reference_of(name, n)
    assert reference["outcomes"] == [True, True, False, True, True, True]
    scales = [s for s, _, _ in reference["scaler"]]
    assert scales == [256.0, 512.0, 256.0, 256.0, 512.0, 512.0]
    assert_all_ranks_match(jobs(n), name, reference, n)


@needs_mpi
@pytest.mark.parametrize("name", [f"ema/{case}" for case in SUBSET] + ["polyak/ADAM-default"])
@pytest.mark.parametrize("n", RANKS)
def test_averaged_weights(jobs, n, name):
    assert_all_ranks_match(jobs(n), name, reference_of(name, n), n)


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_groups_and_frozen_tensors(jobs, n, case):
    assert_all_ranks_match(jobs(n), f"groups/{case}", reference_of(f"groups/{case}", n), n)


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_frozen_tensors_do_not_count_in_the_global_norm(jobs, n, case):
    name = f"groups-clip/{case}"
    assert_all_ranks_match(jobs(n), name, reference_of(name, n), n)


@needs_mpi
@pytest.mark.parametrize("case", SUBSET)
@pytest.mark.parametrize("n", RANKS)
def test_ranks_that_own_no_tensor(jobs, n, case):
    for name in (f"tiny/{case}", f"tiny-skip/{case}"):
        reference = reference_of(name, n)
        assert_all_ranks_match(jobs(n), name, reference, n)
        empty = [r for r in range(n) if not jobs(n)[r][name]["indices"]]
        assert len(empty) == n - len(TINY) if n > len(TINY) else not empty


@functools.cache
def checkpoint_reference(label: str) -> dict:
    return run_reference(checkpoint_scenario(label), 1)


LABELS = [label for label, *_ in CHECKPOINTS]


@needs_mpi
@pytest.mark.parametrize("label", LABELS)
def test_a_run_on_3_ranks_that_saves_a_checkpoint(jobs, label):
    """The 3-rank run that saved after CHECKPOINT_AT steps, and went on, is the reference
    (its gradients sum exactly: any number of ranks gives the same global gradients)."""
    for r in range(3):
        assert_matches(
            jobs(3)[r][f"checkpoint/{label}"],
            checkpoint_reference(label),
            f"checkpoint/{label}, rank {r} of 3",
        )
    folder = jobs.checkpoints / "3" / label
    names = json.loads((folder / "manifest.json").read_text())["files"]
    assert len(names) == 3 and all(name.endswith("-of-3.ckpt") for name in names)
    # saved twice into the folder: the second save's files only
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*names, "manifest.json", "weights.npy"]
    )


@needs_mpi
@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("n", RANKS)
def test_a_checkpoint_of_3_ranks_continues_on_n_ranks(jobs, n, label):
    reference = checkpoint_reference(label)
    for r in range(n):
        resumed = jobs(n)[r][f"resumed/{label}"]
        assert "error" not in resumed, resumed.get("error")
        for k, (outcome, weights) in enumerate(resumed["steps"]):
            step = CHECKPOINT_AT + k
            assert kind(outcome) == kind(reference["outcomes"][step])
            same_bits(
                weights,
                reference["weights"][step],
                f"resumed/{label} on rank {r} of {n}, step {step}",
            )


@needs_mpi
@pytest.mark.parametrize("label", LABELS)
def test_a_checkpoint_of_3_ranks_continues_in_one_process(jobs, tmp_path, label):
    jobs(3)
    folder = jobs.checkpoints / "3" / label
    scenario = checkpoint_scenario(label)
    reference = checkpoint_reference(label)
    weights = np.load(folder / "weights.npy")
    same_bits(weights, reference["weights"][CHECKPOINT_AT - 1], f"{label}: saved weights")

    renamed = mxopt.ParameterBuffer({f"{i}!": shape for i, shape in scenario.shapes.items()})
    with pytest.raises(mxopt.CheckpointError, match="the same indices in the same order"):
        ShardedUpdater.load(folder, renamed, LocalCollectives())

    buffer = mxopt.ParameterBuffer(scenario.shapes)
    buffer.weight[...] = weights
    sharded = ShardedUpdater.load(folder, buffer, LocalCollectives(), reduce="ordered")
    steps = continue_run(sharded, buffer, scenario, 1, 0, lambda u, b: u.step())

    path = tmp_path / f"{label}.ckpt"
    consolidate(folder, path)
    single = mxopt.ParameterBuffer(scenario.shapes)
    single.weight[...] = weights
    updater = mxopt.load_updater(path, weights=single.weights)
    assert set(updater.states) == set(scenario.shapes)
    single_steps = continue_run(updater, single, scenario, 1, -1, lambda u, b: u.update_buffer(b))
    for k, ((o1, w1), (o2, w2)) in enumerate(zip(steps, single_steps, strict=True)):
        step = CHECKPOINT_AT + k
        expected = reference["weights"][step]
        assert kind(o1) == kind(o2) == kind(reference["outcomes"][step])
        same_bits(w1, expected, f"{label}: loaded on one process, step {step}")
        same_bits(w2, expected, f"{label}: consolidated, step {step}")


@needs_mpi
@pytest.mark.parametrize("n", RANKS)
def test_a_failing_rank_stops_every_rank(jobs, n):
    failing = n - 1
    records = [jobs(n)[r]["failure"] for r in range(n)]
    reference = run_reference(Scenario("failure", "ADAM-default", steps=2), n)
    for r, record in enumerate(records):
        assert "error" not in record, record.get("error")
        first, before, retry, during = record["outcomes"]
        assert first is True and retry is True
        if r == failing:
            assert before == f"OSError: injected failure of the statistics on rank {r}"
            assert during.startswith("KeyError: 'injected failure of the update on rank")
        else:
            assert before.startswith(
                f"RuntimeError: ShardedUpdater.step: rank(s) [{failing}] failed before the update"
            )
            assert during.startswith(
                f"RuntimeError: ShardedUpdater.step: rank(s) [{failing}] failed in their update"
            )
        # no weight and no state changed in the failed step, on any rank
        same_bits(record["weights"][2], record["weights"][1], f"rank {r}: the failed step")
        assert record["steps"][2] == record["steps"][1] == {i: 1 for i in record["steps"][1]}
        # then the job went on as if the failed step had not been taken
        same_bits(record["weights"][1], reference["weights"][0], f"rank {r}: step 0")
        same_bits(record["weights"][3], reference["weights"][1], f"rank {r}: the retry")


@needs_mpi
def test_an_exception_outside_mxopt_ends_the_job(tmp_path):
    """Rank 1 raises while the others wait for it: ``python -m mpi4py`` aborts the job."""
    env = job_environment(tmp_path / "pycache")
    code, output, seconds = launch(3, ["abort", str(tmp_path)], env, timeout=60)
    assert code is not None, f"the job hung (killed after {seconds:.0f} s):\n{output}"
    assert code != 0, output
    assert "rank 1 fails outside mxopt" in output
    assert seconds < 30, f"the job took {seconds:.0f} s to end"


def test_the_worker_builds_the_same_optimizers_as_the_cases():
    """The scenarios' cases are those of tests/cases.py (a typo would skip a check)."""
    ids = set(CASE_IDS)
    assert set(SUBSET) <= ids and {c[1] for c in CHECKPOINTS} <= ids
    for case in CASES:
        assert make_optimizer(case, {}, mxopt.OptimizationState(1)) is not None
