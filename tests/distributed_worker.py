"""The scenarios of tests/test_distributed.py, and the MPI worker that runs them.

A :class:`Scenario` is a short training run on a small model: an optimizer case of
``tests/cases.py``, updater options, the gradients every rank writes at every step
(seeded, so that the test process makes the same ones), NaN or infinite values written
by one rank at one step, and parameter-group changes. :func:`run_reference` runs it in
one process with :meth:`mxopt.Updater.update_buffer` on the whole model, fed the
rank-ordered sum of the ranks' gradients; :func:`run_sharded` runs it with a
:class:`~mxopt.distributed.ShardedUpdater` (in-process on a world of one, or on one rank
of an MPI job). Both return an outcome dict of plain values and NumPy arrays.

Run as an MPI job (``mpiexec -n N python -m mpi4py tests/distributed_worker.py main OUT
CHECKPOINTS``), every rank writes ``OUT/rank<r>.pkl`` (a pickle of ``{name: outcome}``:
exact arrays, read back by the test process that wrote this module) for every scenario
of :func:`mpi_scenarios`, the checkpoint runs (saved into ``CHECKPOINTS/<N>/<label>``;
the 3-rank job's saves are loaded by every job) and the failure injections. Mode
``abort``: rank 1 raises an exception outside mxopt while the other ranks wait in a
barrier (the job must end, not hang); ``hang``: rank 1 sleeps while the others wait (to
try the test's timeout by hand).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import traceback
import zlib

import numpy as np

#: the model of most scenarios: 7 tensors, one of size 0, uneven sizes
SHAPES = {"a": (5, 4), "b": (7,), "c": (0,), "d": (3, 2, 2), "e": (1,), "f": (9,), "g": (6,)}
#: two tensors: on 3 or 4 ranks some ranks own none
TINY = {"x": (4,), "y": (3,)}
#: the cases of the scenarios beyond the plain ones (packed, per-tensor norms, Adafactor's
#: per-tensor fallback, a wrapper, an optimizer with memory, a sign-based one)
SUBSET = (
    "ADAM-default",
    "LAMB-default",
    "LARS-larc",
    "SGD-momentum",
    "Adafactor-default",
    "Lookahead-adam",
    "Nadam-scheduler",
    "Rprop-default",
)
#: the checkpoint runs: (label, case id, updater options, shapes); saved (twice, into one
#: folder) after CHECKPOINT_AT - 1 and CHECKPOINT_AT steps
CHECKPOINTS = (
    ("lamb", "LAMB-default",
     {"averaging": ("EMA", 0.9), "max_grad_norm": 2.0, "loss_scaler": (8.0, 2)}, SHAPES),
    ("nadam", "Nadam-scheduler", {}, SHAPES),
    ("adafactor", "Adafactor-default", {"averaging": ("EMA", 0.8)}, SHAPES),
    ("lookahead", "Lookahead-adam", {"nonfinite": "skip"}, SHAPES),
    # on 3 and 4 ranks some ranks own no tensor: empty shares saved and loaded
    ("tiny", "ADAM-amsgrad", {"averaging": ("Polyak",)}, TINY),
)  # fmt: skip
CHECKPOINT_AT, CHECKPOINT_STEPS = 3, 6
BATCH = 4


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A short run. ``options``: updater options, with ``averaging`` as ``("EMA", alpha)``
    or ``("Polyak",)`` and ``loss_scaler`` as ``(init_scale, growth_interval)`` (fresh
    objects are built for every run). ``grads``: ``"random"`` (normal values: their sum
    depends on the order) or ``"dyadic"`` (multiples of 1/64 split between the ranks so
    that any order of summation gives the same, exact, global gradient). ``bad``:
    ``{step: (rank, index, position, value)}``, a value one rank writes into its gradient
    (rank -1: the last). ``groups``: learning-rate multipliers and groups, the first group
    frozen at step 1 and unfrozen at step 2."""

    name: str
    case: str
    options: dict = dataclasses.field(default_factory=dict)
    grads: str = "random"
    reduce: str = "ordered"
    steps: int = 3
    scale: float = 1.0
    bad: dict = dataclasses.field(default_factory=dict)
    groups: bool = False
    shapes: dict = dataclasses.field(default_factory=lambda: SHAPES)

    @property
    def seed(self) -> int:
        return zlib.crc32(self.name.encode())


def case_by_id(case_id: str):
    from tests.cases import CASES

    return next(case for case in CASES if case.id == case_id)


def updater_options(options: dict) -> dict:
    """The updater options of a scenario, as new objects."""
    import mxopt

    built = dict(options)
    averaging = built.get("averaging")
    if averaging is not None:
        built["averaging"] = mxopt.EMA(averaging[1]) if averaging[0] == "EMA" else mxopt.Polyak()
    scaler = built.get("loss_scaler")
    if scaler is not None:
        built["loss_scaler"] = mxopt.DynamicLossScaler(
            init_scale=scaler[0], growth_interval=scaler[1]
        )
    return built


def total_size(shapes: dict) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes.values())


def offset_of(shapes: dict, index) -> int:
    offset = 0
    for key, shape in shapes.items():
        if key == index:
            return offset
        offset += int(np.prod(shape, dtype=np.int64))
    raise KeyError(index)


def initial_weights(scenario: Scenario) -> np.ndarray:
    rng = np.random.default_rng([scenario.seed, 1 << 20])
    return rng.normal(size=total_size(scenario.shapes)).astype(np.float32)


def rank_grads(scenario: Scenario, step: int, ranks: int) -> list[np.ndarray]:
    """Every rank's gradient at ``step`` (float32, flat), bad values included."""
    n = total_size(scenario.shapes)
    if scenario.grads == "random":
        parts = [
            (
                np.random.default_rng([scenario.seed, step, r]).normal(size=n) * scenario.scale
            ).astype(np.float32)
            for r in range(ranks)
        ]
    else:
        rng = np.random.default_rng([scenario.seed, step])
        whole = rng.integers(-256, 256, size=n) / 64.0 * scenario.scale
        parts = [rng.integers(-256, 256, size=n) / 64.0 * scenario.scale for _ in range(ranks - 1)]
        parts.append(whole - sum(parts, np.zeros(n)))
        parts = [part.astype(np.float32) for part in parts]
    if step in scenario.bad:
        rank, index, position, value = scenario.bad[step]
        parts[rank % ranks][offset_of(scenario.shapes, index) + position] = value
    return parts


def ordered_sum(parts) -> np.ndarray:
    """``((g_0 + g_1) + g_2) + ...`` in float32."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def change_groups(scenario: Scenario, updater, step: int) -> None:
    """The parameter-group changes of ``scenario`` before ``step`` (on an Updater or a
    ShardedUpdater alike)."""
    if not scenario.groups:
        return
    indices = list(scenario.shapes)
    if step == 0:
        updater.set_lr_mult({indices[1]: 0.5, indices[-2]: 2.0})
        third = max(1, len(indices) // 3)
        updater.set_groups([indices[:third], indices[third : 2 * third], indices[2 * third :]])
    elif step == 1:
        updater.freeze_to(1)
    elif step == 2:
        updater.unfreeze()


def _outcome_of_step(take_step):
    try:
        return bool(take_step())
    except Exception as error:  # recorded; the test decides whether it was expected
        return f"{type(error).__name__}: {error}"


def _run(scenario: Scenario, ranks: int, make, take_step, *, rank: int = 0):
    """The run behind :func:`run_reference` and :func:`run_sharded`."""
    import mxopt
    from tests.cases import make_optimizer

    state = mxopt.OptimizationState(batch_size=BATCH)
    state.begin_epoch()
    optimizer = make_optimizer(case_by_id(scenario.case), {}, state)
    buffer = mxopt.ParameterBuffer(scenario.shapes)
    updater = make(optimizer, buffer)
    outcome = {"outcomes": [], "weights": [], "scaler": []}
    for step in range(scenario.steps):
        change_groups(scenario, updater, step)
        state.begin_batch()
        buffer.grad[...] = (
            rank_grads(scenario, step, ranks)[rank]
            if rank >= 0
            else (ordered_sum(rank_grads(scenario, step, ranks)))
        )
        outcome["outcomes"].append(_outcome_of_step(lambda: take_step(updater, buffer)))
        outcome["weights"].append(buffer.weight.copy())
        scaler = updater.loss_scaler
        if scaler is not None:
            outcome["scaler"].append((scaler.scale, scaler.clean_steps, scaler.skipped))
    outcome["states"] = {
        index: {
            "step": s.step,
            "skipped": s.skipped,
            "memory": repr(sorted(s.memory.items())),
            "arrays": {name: np.array(a, copy=True) for name, a in s.arrays.items()},
        }
        for index, s in updater.states.items()
    }
    return outcome, updater, buffer


def run_reference(scenario: Scenario, ranks: int) -> dict:
    """One process, ``update_buffer`` on the whole model from the rank-ordered sum."""
    import mxopt

    def make(optimizer, buffer):
        buffer.weight[...] = initial_weights(scenario)
        return mxopt.get_updater(optimizer, **updater_options(scenario.options))

    outcome, updater, buffer = _run(scenario, ranks, make, lambda u, b: u.update_buffer(b), rank=-1)
    if updater.averaging is not None:
        averages = updater.averages
        outcome["average"] = np.concatenate(
            [
                np.ravel(averages[i]) if i in averages else buffer.weights[i].ravel()
                for i in buffer.indices
            ]
            or [np.zeros(0, np.float32)]
        )
    return outcome


def run_sharded(scenario: Scenario, comm, rank: int = 0, ranks: int = 1) -> dict:
    """This rank's run with a ShardedUpdater on ``comm`` (garbage weights on every rank but
    0 until ``broadcast_weights``)."""
    from mxopt.distributed import ShardedUpdater

    def make(optimizer, buffer):
        buffer.weight[...] = initial_weights(scenario) if rank == 0 else rank + 0.25
        updater = ShardedUpdater(
            optimizer, buffer, comm, reduce=scenario.reduce, **updater_options(scenario.options)
        )
        updater.broadcast_weights()
        return updater

    outcome, updater, buffer = _run(scenario, ranks, make, lambda u, b: u.step(), rank=rank)
    outcome["indices"] = list(updater.indices)
    outcome["index_ranges"] = list(updater.index_ranges)
    outcome["size"] = updater.size
    if updater.updater.averaging is not None:
        outcome["average"] = updater.averaged_weights()
    return outcome


def mpi_scenarios() -> list[Scenario]:
    """What every MPI job runs (the test process builds the same list)."""
    from tests.cases import CASES

    scenarios = []
    for case in CASES:
        scenarios.append(Scenario(f"ordered/{case.id}", case.id))
        scenarios.append(Scenario(f"sum/{case.id}", case.id, grads="dyadic", reduce="sum"))
    for case in SUBSET:
        scenarios += [
            Scenario(f"sum-random/{case}", case, reduce="sum"),
            Scenario(f"clip/{case}", case, {"max_grad_norm": 0.5}, scale=5.0),
            Scenario(
                f"clip-sum/{case}",
                case,
                {"max_grad_norm": 0.5},
                grads="dyadic",
                reduce="sum",
                scale=5.0,
            ),
            # a NaN from the last rank in a tensor of rank 0's share
            Scenario(
                f"skip/{case}", case, {"nonfinite": "skip"}, steps=4, bad={1: (-1, "a", 3, np.nan)}
            ),
            # a first step skipped for a NaN from rank 0 in the last rank's share
            Scenario(
                f"skip-first/{case}", case, {"nonfinite": "skip"}, bad={0: (0, "g", 5, -np.inf)}
            ),
            Scenario(f"raise/{case}", case, {"nonfinite": "raise"}, bad={1: (-1, "d", 0, np.inf)}),
            # applied with the NaN (no statistics gathered: the policy decides nothing)
            Scenario(f"apply/{case}", case, {"nonfinite": "apply"}, bad={1: (-1, "f", 2, np.nan)}),
            Scenario(f"ema/{case}", case, {"averaging": ("EMA", 0.9)}),
            Scenario(f"groups/{case}", case, groups=True, steps=4),
            Scenario(
                f"groups-clip/{case}", case, {"max_grad_norm": 0.5}, groups=True, steps=4, scale=5.0
            ),
            Scenario(
                f"scaler/{case}",
                case,
                {"loss_scaler": (2.0**8, 2)},
                steps=6,
                bad={2: (-1, "b", 1, np.inf)},
            ),
            Scenario(
                f"tiny/{case}",
                case,
                {"max_grad_norm": 0.5, "averaging": ("EMA", 0.9)},
                shapes=TINY,
                scale=5.0,
            ),
            Scenario(
                f"tiny-skip/{case}",
                case,
                {"nonfinite": "skip"},
                shapes=TINY,
                bad={1: (0, "y", 2, np.nan)},
            ),
        ]
    scenarios.append(Scenario("polyak/ADAM-default", "ADAM-default", {"averaging": ("Polyak",)}))
    return scenarios


def checkpoint_scenario(label: str) -> Scenario:
    _, case, options, shapes = next(c for c in CHECKPOINTS if c[0] == label)
    return Scenario(f"checkpoint/{label}", case, options, grads="dyadic",
                    steps=CHECKPOINT_STEPS, scale=4.0, shapes=shapes)  # fmt: skip


def continue_run(updater, buffer, scenario: Scenario, ranks: int, rank: int, step_fn) -> list:
    """Steps CHECKPOINT_AT.. of a checkpoint scenario: outcomes and the weights after each."""
    done = []
    for step in range(CHECKPOINT_AT, scenario.steps):
        updater.optimizer.state.begin_batch()
        buffer.grad[...] = (
            rank_grads(scenario, step, ranks)[rank]
            if rank >= 0
            else (ordered_sum(rank_grads(scenario, step, ranks)))
        )
        done.append((_outcome_of_step(lambda: step_fn(updater, buffer)), buffer.weight.copy()))
    return done


# -- the MPI job -------------------------------------------------------------------------------


def _checkpoints(comm, rank, ranks, folder, results) -> None:
    """Run every checkpoint scenario whole (saving after CHECKPOINT_AT steps into
    ``folder/<ranks>/<label>``, the weights beside it), then load the save of the 3-rank
    job (if there is one) on this job's ranks and continue."""
    import mxopt
    from mxopt.distributed import ShardedUpdater

    for label, *_ in CHECKPOINTS:
        scenario = checkpoint_scenario(label)
        mine = os.path.join(folder, str(ranks), label)
        saved = {}

        def take_step(updater, buffer, scenario=scenario, mine=mine, saved=saved):
            applied = updater.step()
            if len(saved) in (CHECKPOINT_AT - 2, CHECKPOINT_AT - 1):  # saved twice
                updater.save(mine)
                if rank == 0:
                    np.save(os.path.join(mine, "weights.npy"), buffer.weight)
            saved[len(saved)] = True
            return applied

        def make(optimizer, buffer, scenario=scenario):
            buffer.weight[...] = initial_weights(scenario)
            return ShardedUpdater(
                optimizer, buffer, comm, reduce=scenario.reduce, **updater_options(scenario.options)
            )

        try:
            outcome, updater, _ = _run(scenario, ranks, make, take_step, rank=rank)
            outcome["indices"] = list(updater.indices)
            if updater.updater.averaging is not None:
                outcome["average"] = updater.averaged_weights()
        except Exception:
            outcome = {"error": traceback.format_exc()}
        results[f"checkpoint/{label}"] = outcome
        source = os.path.join(folder, "3", label)
        try:
            comm.Barrier()
            buffer = mxopt.ParameterBuffer(scenario.shapes)
            buffer.weight[...] = np.load(os.path.join(source, "weights.npy"))
            updater = ShardedUpdater.load(source, buffer, comm, reduce=scenario.reduce)
            results[f"resumed/{label}"] = {
                "steps": continue_run(
                    updater, buffer, scenario, ranks, rank, lambda u, b: u.step()
                ),
                "indices": list(updater.indices),
            }
        except Exception:
            results[f"resumed/{label}"] = {"error": traceback.format_exc()}


def _failures(comm, rank, ranks, results) -> None:
    """One rank fails before the update (its gradient statistics raise), then in its
    update; every rank reports what it raised, and the weights and states around."""
    import mxopt
    import mxopt.distributed.sharded as sharded_module
    from mxopt.distributed import ShardedUpdater
    from tests.cases import make_optimizer

    scenario = Scenario("failure", "ADAM-default")
    state = mxopt.OptimizationState(batch_size=BATCH)
    state.begin_epoch()
    optimizer = make_optimizer(case_by_id(scenario.case), {}, state)
    buffer = mxopt.ParameterBuffer(scenario.shapes)
    buffer.weight[...] = initial_weights(scenario)
    updater = ShardedUpdater(optimizer, buffer, comm, reduce="ordered")
    failing = ranks - 1

    def steps():
        return {i: s.step for i, s in updater.states.items()}

    def grads(step):
        state.begin_batch()
        buffer.grad[...] = rank_grads(scenario, step, ranks)[rank]

    record = {"outcomes": [], "weights": [buffer.weight.copy()], "steps": [steps()]}
    grads(0)
    record["outcomes"].append(_outcome_of_step(updater.step))
    record["weights"].append(buffer.weight.copy())
    record["steps"].append(steps())

    real = sharded_module.segment_statistics
    if rank == failing:

        def broken(*args):
            raise OSError(f"injected failure of the statistics on rank {rank}")

        sharded_module.segment_statistics = broken
    try:
        grads(1)
        record["outcomes"].append(_outcome_of_step(updater.step))
    finally:
        sharded_module.segment_statistics = real
    record["weights"].append(buffer.weight.copy())
    record["steps"].append(steps())
    # the job goes on: the same gradients again
    record["outcomes"].append(_outcome_of_step(updater.step))
    record["weights"].append(buffer.weight.copy())
    record["steps"].append(steps())

    if rank == failing:

        def broken_update(*args, **kwargs):
            raise KeyError(f"injected failure of the update on rank {rank}")

        updater.updater.update_buffer = broken_update
    grads(2)
    record["outcomes"].append(_outcome_of_step(updater.step))
    record["steps"].append(steps())
    results["failure"] = record


def mpi_main(argv) -> None:
    mode, out = argv[0], argv[1]
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    if mode == "hang":  # rank 1 never comes to the barrier (to try the timeout)
        if rank == 1:
            import time

            time.sleep(600)
        comm.Barrier()
        return
    if mode == "abort":
        comm.Barrier()
        if rank == 1:
            raise ValueError("rank 1 fails outside mxopt")
        comm.Barrier()  # the others wait here for rank 1, which never comes
        return
    folder = argv[2]
    results = {}
    for scenario in mpi_scenarios():
        # the default communicator (None: COMM_WORLD) for the plain runs, an explicit one
        # for the others
        use = None if scenario.name.startswith("ordered/") else comm
        try:
            results[scenario.name] = run_sharded(scenario, use, rank, ranks)
        except Exception:
            results[scenario.name] = {"error": traceback.format_exc()}
    _checkpoints(comm, rank, ranks, folder, results)
    try:
        _failures(comm, rank, ranks, results)
    except Exception:
        results["failure"] = {"error": traceback.format_exc()}
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    mpi_main(sys.argv[1:])
