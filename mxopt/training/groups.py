"""Per-index hyperparameters: multipliers, name rules, groups, freezing.

Every updater has a :class:`ParamGroups` (``updater.groups``) that gives each index
a learning-rate multiplier, a weight-decay multiplier and a frozen flag:

* **MXNet style**: ``updater.set_lr_mult({"fc1_weight": 0.1})`` and
  ``updater.set_wd_mult({...})``; keys are indices, or glob patterns matched
  against ``str(index)`` (``"*bias"``, ``"*norm*"``). An exact index wins over a
  pattern; among patterns the first that matches wins. :func:`mxnet_wd_mult`
  gives MXNet's default rule (no weight decay for names ending neither in
  ``_weight`` nor in ``_gamma``), ``exclude_from_weight_decay`` the common
  "no decay for biases and normalisation parameters".
* **fastai style**: ``updater.set_groups([[...], [...], [...]])`` splits indices
  into ordered groups (e.g. body to head); ``updater.discriminative_lr(slice(1e-5,
  1e-3))`` spreads learning rates log-uniformly across them (the optimizer's
  ``lr`` is the slice's end), and ``freeze_to(n)`` / ``freeze()`` /
  ``unfreeze()`` stop and restart the updates of groups.

The multipliers apply to the learning rate (from ``lr`` or the scheduler) and to
``weight_decay`` wherever the optimizer uses them; a frozen index is not touched
at all (no update, no state change, no step count).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Hashable, Iterable, Mapping

from mxopt.core.checks import shown

__all__ = ["GroupMethods", "ParamGroups", "mxnet_wd_mult", "NORM_AND_BIAS_PATTERNS"]

#: Names that usually get no weight decay: biases and normalisation parameters.
NORM_AND_BIAS_PATTERNS = ("*bias*", "*norm*", "*bn*", "*_beta", "*_gamma", "*ln_*", "*layernorm*")

_GLOB = set("*?[")


def _is_pattern(key) -> bool:
    return isinstance(key, str) and bool(_GLOB & set(key))


def _check_multipliers(name: str, mapping) -> dict:
    if not isinstance(mapping, Mapping):
        raise TypeError(
            f"{name} must be a mapping of indices or patterns to numbers, got {shown(mapping)}"
        )
    checked = {}
    for key, value in mapping.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            raise ValueError(
                f"{name}[{shown(key)}] must be a finite number >= 0, got {shown(value)}"
            )
        checked[key] = float(value)
    return checked


def mxnet_wd_mult(indices: Iterable[Hashable]) -> dict:
    """MXNet's default weight-decay rule: ``{name: 0.0}`` for every name that ends neither
    in ``_weight`` nor in ``_gamma`` (biases, BatchNorm's beta, ...)."""
    return {
        index: 0.0
        for index in indices
        if not (str(index).endswith("_weight") or str(index).endswith("_gamma"))
    }


class ParamGroups:
    """Learning-rate and weight-decay multipliers, groups and frozen indices of an updater."""

    def __init__(self):
        self.lr_mult: dict = {}
        self.wd_mult: dict = {}
        self.groups: list[tuple] = []
        self.frozen: set = set()
        self.version = 0  # bumped by every change (packed buffers re-plan on it)
        self._resolved: dict = {}

    # -- lookups -------------------------------------------------------------------------

    @staticmethod
    def _lookup(mapping: dict, index) -> float:
        if index in mapping:
            return mapping[index]
        text = str(index)
        for key, value in mapping.items():
            if _is_pattern(key) and fnmatch.fnmatchcase(text, key):
                return value
        return 1.0

    def resolve(self, index) -> tuple[float, float, bool]:
        """``(lr_mult, wd_mult, frozen)`` of ``index``."""
        resolved = self._resolved.get(index)
        if resolved is None:
            resolved = (
                self._lookup(self.lr_mult, index),
                self._lookup(self.wd_mult, index),
                index in self.frozen,
            )
            self._resolved[index] = resolved
        return resolved

    @property
    def trivial(self) -> bool:
        """True when every index has multipliers 1 and none is frozen."""
        return not (self.lr_mult or self.wd_mult or self.frozen)

    def _changed(self) -> None:
        self._resolved = {}
        self.version += 1

    # -- MXNet style ---------------------------------------------------------------------

    def set_lr_mult(self, mapping: Mapping) -> None:
        """Replace the learning-rate multipliers (indices or glob patterns -> factor)."""
        self.lr_mult = _check_multipliers("lr_mult", mapping)
        self._changed()

    def set_wd_mult(self, mapping: Mapping) -> None:
        """Replace the weight-decay multipliers (indices or glob patterns -> factor)."""
        self.wd_mult = _check_multipliers("wd_mult", mapping)
        self._changed()

    def exclude_from_weight_decay(self, patterns: Iterable[str] = NORM_AND_BIAS_PATTERNS) -> None:
        """No weight decay for indices whose name matches any of ``patterns`` (added to
        the existing multipliers)."""
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"patterns must be strings, got {shown(pattern)}")
            self.wd_mult[pattern] = 0.0
        self._changed()

    # -- fastai style --------------------------------------------------------------------

    def set_groups(self, groups: Iterable[Iterable[Hashable]]) -> None:
        """Ordered groups of indices (e.g. from the body of a network to its head)."""
        groups = [tuple(group) for group in groups]
        seen = set()
        for number, group in enumerate(groups):
            if not group:
                raise ValueError(f"set_groups: group {number} is empty")
            for index in group:
                if index in seen:
                    raise ValueError(f"set_groups: index {shown(index)} is in more than one group")
                seen.add(index)
        self.groups = groups
        self._changed()

    def _require_groups(self, what: str) -> None:
        if not self.groups:
            raise ValueError(f"{what}: no groups; call set_groups([...]) first")

    def discriminative_lr(self, lr, base_lr: float | None = None) -> list[float]:
        """Give each group a learning rate, as fastai's ``lr=slice(...)``.

        ``lr`` is ``slice(lo, hi)`` (log-uniform from ``lo`` for the first group
        to ``hi`` for the last), ``slice(hi)`` (``hi / 10`` for every group but the
        last, which gets ``hi``), or a sequence with one rate per group. The rates
        become multipliers of the optimizer's learning rate, taken to be
        ``base_lr`` (default: the largest rate, so set the optimizer's ``lr``, or
        the peak of its schedule, to it). Returns the per-group rates.
        """
        self._require_groups("discriminative_lr")
        count = len(self.groups)
        if isinstance(lr, slice):
            if lr.step is not None:
                raise ValueError(
                    "discriminative_lr: a slice without a step, e.g. slice(1e-5, 1e-3)"
                )
            if lr.start is None:
                rates = [lr.stop / 10] * (count - 1) + [lr.stop]
            elif count == 1:
                rates = [lr.stop]
            else:
                low, high = float(lr.start), float(lr.stop)
                if not (0 < low <= high):
                    raise ValueError(f"discriminative_lr: need 0 < start <= stop, got {shown(lr)}")
                ratio = high / low
                rates = [low * ratio ** (k / (count - 1)) for k in range(count)]
        else:
            rates = [float(r) for r in lr]
            if len(rates) != count:
                raise ValueError(
                    f"discriminative_lr: {len(rates)} rates for {count} groups; give one per group"
                )
        if any(not (math.isfinite(r) and r > 0) for r in rates):
            raise ValueError(f"discriminative_lr: rates must be finite and > 0, got {rates}")
        base = max(rates) if base_lr is None else float(base_lr)
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"discriminative_lr: base_lr must be > 0, got {shown(base_lr)}")
        for group, rate in zip(self.groups, rates, strict=True):
            for index in group:
                self.lr_mult[index] = rate / base
        self._changed()
        return rates

    def freeze_to(self, n: int) -> None:
        """Freeze the groups before group ``n`` (negative counts from the end) and unfreeze
        the others, as fastai's ``freeze_to``."""
        self._require_groups("freeze_to")
        count = len(self.groups)
        stop = n if n >= 0 else count + n
        self.frozen = {index for group in self.groups[: max(0, stop)] for index in group}
        self._changed()

    def freeze(self) -> None:
        """Freeze every group but the last (fastai's ``freeze``)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Unfreeze everything."""
        self.frozen = set()
        self._changed()

    # -- checkpoints ---------------------------------------------------------------------

    def to_dict(self, encode) -> dict:
        """Plain values, with indices passed through ``encode``."""
        return {
            "lr_mult": [[encode(k), v] for k, v in self.lr_mult.items()],
            "wd_mult": [[encode(k), v] for k, v in self.wd_mult.items()],
            "groups": [[encode(i) for i in group] for group in self.groups],
            "frozen": [encode(i) for i in self.frozen],
        }

    @classmethod
    def from_dict(cls, d: dict, decode) -> ParamGroups:
        groups = cls()
        groups.set_lr_mult({decode(k): v for k, v in d["lr_mult"]})
        groups.set_wd_mult({decode(k): v for k, v in d["wd_mult"]})
        if d["groups"]:
            groups.set_groups([[decode(i) for i in group] for group in d["groups"]])
        groups.frozen = {decode(i) for i in d["frozen"]}
        groups._changed()
        return groups


class GroupMethods:
    """The parameter-group methods of :class:`~mxopt.Updater`, on its ``groups``
    (a :class:`ParamGroups`): one place for the group API, next to the groups."""

    groups: ParamGroups

    def set_lr_mult(self, mapping) -> None:
        """Learning-rate multipliers by index or glob pattern (see :mod:`mxopt.training.groups`)."""
        self.groups.set_lr_mult(mapping)

    def set_wd_mult(self, mapping) -> None:
        """Weight-decay multipliers by index or glob pattern (see :mod:`mxopt.training.groups`)."""
        self.groups.set_wd_mult(mapping)

    def exclude_from_weight_decay(self, patterns=None) -> None:
        """No weight decay for indices matching ``patterns`` (default: biases and norms)."""
        if patterns is None:
            self.groups.exclude_from_weight_decay()
        else:
            self.groups.exclude_from_weight_decay(patterns)

    def set_groups(self, groups) -> None:
        """Ordered groups of indices, for :meth:`discriminative_lr` and freezing."""
        self.groups.set_groups(groups)

    def discriminative_lr(self, lr, base_lr=None) -> list:
        """Per-group learning rates from ``slice(lo, hi)`` (fastai); see
        this module."""
        return self.groups.discriminative_lr(lr, base_lr)

    def freeze_to(self, n: int) -> None:
        """Freeze the groups before group ``n``; unfreeze the rest."""
        self.groups.freeze_to(n)

    def freeze(self) -> None:
        """Freeze every group but the last."""
        self.groups.freeze()

    def unfreeze(self) -> None:
        """Unfreeze every group."""
        self.groups.unfreeze()
