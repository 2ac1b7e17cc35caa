"""The model that tests/test_stateful_fuzz.py compares an mxopt updater with.

It knows nothing of the kernels: each index's weight and optimizer state are float64
arrays stepped by the index's NumPy oracle (``tests/reference``), its update and skip
counts are plain integers, the training loop's counters follow the documented rules
(docs/counting.md), and the parameter groups (multipliers, groups, frozen indices) are
resolved here as mxopt.training.groups documents them.

It also holds what the fuzzer needs besides the model: bit-exact snapshots of an
updater (to show that a refused call changed nothing) and the continuation a checkpoint
is run with in this process and in a fresh one.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import attrs
import numpy as np

from tests.cases import oracle_inputs

__all__ = [
    "Counters",
    "GroupsModel",
    "IndexModel",
    "Model",
    "bits",
    "continue_run",
    "continuation_grads",
    "snapshot",
]

COUNTERS = ("batch_size", "curr_epoch", "curr_batch", "curr_iter")


@dataclass
class Counters:
    """OptimizationState's counters, as docs/counting.md states them."""

    batch_size: int
    curr_epoch: int = 0
    curr_batch: int = 0
    curr_iter: int = 0

    def begin_epoch(self) -> None:
        self.curr_epoch += 1
        self.curr_batch = 0

    def begin_batch(self) -> None:
        self.curr_iter += 1
        self.curr_batch += 1

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in COUNTERS}


@dataclass
class GroupsModel:
    """Per-index multipliers, groups and frozen indices (mxopt.training.groups)."""

    lr_mult: dict = field(default_factory=dict)
    wd_mult: dict = field(default_factory=dict)
    groups: list = field(default_factory=list)
    frozen: set = field(default_factory=set)

    @staticmethod
    def _lookup(mapping: dict, index) -> float:
        if index in mapping:  # an exact index wins over the patterns
            return mapping[index]
        for key, value in mapping.items():  # then the first pattern that matches str(index)
            if isinstance(key, str) and set("*?[") & set(key):
                if fnmatch.fnmatchcase(str(index), key):
                    return value
        return 1.0

    def resolve(self, index) -> tuple[float, float, bool]:
        return (
            self._lookup(self.lr_mult, index),
            self._lookup(self.wd_mult, index),
            index in self.frozen,
        )

    def discriminative_lr(self, rates, base: float) -> None:
        for group, rate in zip(self.groups, rates, strict=True):
            for index in group:
                self.lr_mult[index] = float(rate) / base

    def freeze_to(self, n: int) -> None:
        stop = n if n >= 0 else len(self.groups) + n
        self.frozen = {index for group in self.groups[: max(0, stop)] for index in group}


@dataclass
class IndexModel:
    """One index: its float64 weight, its oracle state (``None`` until its first update,
    as mxopt creates state lazily) and its counts. ``poisoned``: a NaN or an infinity
    went in under ``nonfinite="apply"``; how it spreads through the state is not
    specified, so the oracle says nothing about this index any more."""

    weight: np.ndarray
    state: dict | None = None
    step: int = 0
    skipped: int = 0
    poisoned: bool = False


class Model:
    """Every index of the fuzzed model, the loop's counters and the groups."""

    def __init__(self, oracle, dtype, weights: dict, batch_size: int):
        self.oracle = oracle
        self.dtype = dtype
        self.indices = {k: IndexModel(np.asarray(w, np.float64).copy()) for k, w in weights.items()}
        self.counters = Counters(batch_size)
        self.groups = GroupsModel()

    def copy(self) -> Model:
        """A deep copy (sharing the oracle module)."""
        return copy.deepcopy(self, memo={id(self.oracle): self.oracle})

    def frozen(self, index) -> bool:
        return self.groups.resolve(index)[2]

    def existing(self) -> set:
        return {k for k, m in self.indices.items() if m.state is not None}

    def inputs(self, optimizer, opt_state, index, k: int):
        """The oracle's inputs for update ``k`` of ``index``: the options read at the
        state (from ``optimizer``, which the fuzzer keeps in step with the one under
        test), times the index's multipliers."""
        lr_mult, wd_mult, _ = self.groups.resolve(index)
        x = oracle_inputs(optimizer, opt_state, k, self.dtype)
        if hasattr(x, "lr"):
            x.lr *= lr_mult
        if hasattr(x, "weight_decay"):
            x.weight_decay *= wd_mult
        return x

    def state_names(self, optimizer, opt_state, index) -> tuple[set, set]:
        """``(missing, extra)``: the state arrays the options now call for that ``index``'s
        state lacks, and those it holds that they no longer call for (an option such as
        ``momentum`` or ``amsgrad`` changed after the state was made)."""
        m = self.indices[index]
        if m.state is None:
            return set(), set()
        x = self.inputs(optimizer, opt_state, index, m.step + 1)
        wanted = set(self.oracle.init(m.weight.shape, x))
        return wanted - set(m.state), set(m.state) - wanted

    def apply(self, optimizer, opt_state, index, grad) -> None:
        """One applied update of ``index`` from ``grad`` (the caller's array)."""
        m = self.indices[index]
        x = self.inputs(optimizer, opt_state, index, m.step + 1)
        if m.state is None:
            m.state = self.oracle.init(m.weight.shape, x)
        grad = np.asarray(grad, np.float64)
        with np.errstate(all="ignore"):  # "apply" lets NaN and inf through
            self.oracle.step(m.weight, grad, m.state, x)
        m.step += 1
        m.poisoned |= not np.isfinite(grad).all()

    def skip(self, optimizer, opt_state, indices) -> None:
        """A skipped step of ``indices``: counted on each, nothing else changes; an index
        without state gets its initial state, kept at step 0 (docs/failure-behaviour.md)."""
        for index in indices:
            m = self.indices[index]
            if m.state is None:
                m.state = self.oracle.init(
                    m.weight.shape, self.inputs(optimizer, opt_state, index, 1)
                )
            m.skipped += 1


# -- bit-exact snapshots ---------------------------------------------------------------------


def bits(array) -> bytes:
    """An array's exact contents (dtype, shape and bytes), NaN payloads included."""
    a = np.ascontiguousarray(array)
    return f"{a.dtype.str}{a.shape}".encode() + a.tobytes()


def _float_bits(value) -> bytes:
    return np.float64(value).tobytes()


def snapshot(updater, arrays) -> dict:
    """Everything a refused call must leave as it was: the ``arrays`` (weights and
    gradients, by name), every index's state arrays, step, skip count and per-weight
    scalars, the loop's counters, the options, the groups and the policy."""
    groups = updater.groups
    return {
        "arrays": {name: bits(a) for name, a in arrays.items()},
        "states": {
            index: (
                state.step,
                state.skipped,
                {k: _float_bits(v) for k, v in state.memory.items()},
                {name: bits(a) for name, a in state.arrays.items()},
            )
            for index, state in updater.states.items()
        },
        "counters": attrs.asdict(updater.optimizer.state),
        "opts": attrs.asdict(updater.optimizer.opts, recurse=False),
        "groups": (
            dict(groups.lr_mult),
            dict(groups.wd_mult),
            list(groups.groups),
            set(groups.frozen),
        ),
        "policy": updater.nonfinite,
    }


# -- the continuation of a checkpoint, here and in a fresh process ---------------------------


def continuation_grads(shapes: dict, dtype, steps: int, seed: int) -> list:
    """The gradients of ``steps`` more batches: one ``{index: grad}`` per batch."""
    rng = np.random.default_rng(seed)
    return [
        {index: (rng.normal(size=shape) * 2).astype(dtype) for index, shape in shapes.items()}
        for _ in range(steps)
    ]


def continue_run(updater, weights: dict, grads: list) -> dict:
    """Run a saved or live updater on: each batch advances the loop's counters, then
    updates every index on its own. Returns everything the run ends with, as bits."""
    for batch in grads:
        updater.optimizer.state.begin_batch()
        for index, grad in batch.items():
            updater(index, grad, weights[index])
    return {
        "weights": {repr(k): bits(w) for k, w in weights.items()},
        "states": {
            repr(k): (s.step, s.skipped, {n: bits(a) for n, a in s.arrays.items()})
            for k, s in updater.states.items()
        },
        "counters": attrs.asdict(updater.optimizer.state),
    }
