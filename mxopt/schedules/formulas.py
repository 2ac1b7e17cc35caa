"""The formulas several schedules share: annealing curves, torch.optim's cycle arithmetic,
MXNet's exact sequential decay and ReduceLROnPlateau's replay of scores."""

from __future__ import annotations

import math
import threading

from mxopt.core.checks import shown
from mxopt.schedules.fields import invalid

__all__ = [
    "ANNEAL", "cos_anneal", "cosine", "cyclic_amplitude", "cyclic_position", "linear_anneal",
    "one_cycle_phases", "one_cycle_value", "plateau_reductions", "safe_pow", "sequential_decay",
]  # fmt: skip


def safe_pow(base: float, exponent: float) -> float:
    """``base ** exponent`` for ``base > 0``, ``inf`` instead of an OverflowError."""
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1), as torch's ``_annealing_cos``."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def linear_anneal(start: float, end: float, pct: float) -> float:
    """Straight line from ``start`` to ``end``, as torch's ``_annealing_linear``."""
    return (end - start) * pct + start


ANNEAL = {"cos": cos_anneal, "linear": linear_anneal}


def one_cycle_phases(total_steps: int, pct_start: float, three_phase: bool):
    """torch.optim's OneCycleLR phases: ``(end_step, start_key, end_key)`` with keys
    0 = initial, 1 = peak, 2 = final (for momentum: 0/2 = max, 1 = base)."""
    if three_phase:
        return (
            (float(pct_start * total_steps) - 1, 0, 1),
            (float(2 * pct_start * total_steps) - 2, 1, 0),
            (total_steps - 1, 0, 2),
        )
    return ((float(pct_start * total_steps) - 1, 0, 1), (total_steps - 1, 1, 2))


def check_one_cycle(instance, total_steps: int, pct_start: float, three_phase: bool) -> None:
    """Reject OneCycle settings whose phases are empty (torch divides by zero there)."""
    start = 0.0
    for i, (end, _, _) in enumerate(one_cycle_phases(total_steps, pct_start, three_phase)):
        if end <= start:
            raise invalid(
                instance,
                f"pct_start={shown(pct_start)} with total_steps={shown(total_steps)} leaves phase "
                f"{i + 1} empty: it needs 1 < pct_start * total_steps"
                + (" and 2 * pct_start * total_steps < total_steps + 1" if three_phase else "")
                + " and pct_start < 1",
            )
        start = end


def one_cycle_value(t: int, phases, values, anneal: str) -> float:
    """torch.optim's OneCycleLR at step ``t``; after ``total_steps - 1`` the final value."""
    start_step = 0.0
    last = len(phases) - 1
    for i, (end_step, a, b) in enumerate(phases):
        if t <= end_step or i == last:
            pct = min((t - start_step) / (end_step - start_step), 1.0)
            return ANNEAL[anneal](values[a], values[b], pct)
        start_step = end_step
    raise AssertionError("unreachable")


def cyclic_position(t: int, up: int, down: int) -> tuple[int, float]:
    """torch.optim's CyclicLR position: ``(cycle, scale_factor)``, cycle 1-based and
    scale_factor rising 0 -> 1 over ``up`` steps then falling back over ``down``."""
    total = float(up + down)
    ratio = up / total
    cycle = math.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    if x <= ratio:
        return cycle, x / ratio
    return cycle, (x - 1) / (ratio - 1)


def check_scale_mode(instance) -> None:
    """CyclicLR's ``scale_mode``: None (the mode's default), 'cycle' or 'iterations'."""
    if instance.scale_mode not in (None, "cycle", "iterations"):
        raise invalid(
            instance,
            f"scale_mode must be None, 'cycle' or 'iterations', got {shown(instance.scale_mode)}",
        )


def cyclic_amplitude(mode: str, gamma: float, scale_mode: str | None, cycle: int, t: int):
    """torch.optim's CyclicLR ``scale_fn`` applied per cycle or per iteration."""
    if scale_mode is None:
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
    x = cycle if scale_mode == "cycle" else t
    if mode == "triangular":
        return 1.0
    if mode == "triangular2":
        return 1 / safe_pow(2.0, x - 1)
    return gamma**x


def cosine(peak: float, low: float, t: int, steps: int) -> float:
    """Half a cosine from ``peak`` (t = 0) to ``low`` (t >= steps)."""
    return low + (peak - low) * (1 + math.cos(math.pi * min(t, steps) / steps)) / 2


# Exact sequential products (MXNet's stateful schedulers multiply base_lr in place):
# cached per (base, factor, floor) so a pure function gets the same bits in O(1).
_PRODUCTS: dict = {}


_PRODUCTS_LOCK = threading.Lock()


_PRODUCTS_LENGTH = 1 << 16


_PRODUCTS_KEYS = 256


def sequential_decay(base: float, factor: float, k: int, floor: float | None = None) -> float:
    """``base`` multiplied ``k`` times by ``factor``, rounding after each product and
    clamping at ``floor`` once below it, exactly as a stateful loop computes it.

    Beyond 65536 products (or once the value stops changing) it continues with
    ``factor ** rest`` from the last exact value.
    """
    if k <= 0:
        return base
    key = (base, factor, floor)
    with _PRODUCTS_LOCK:
        table = _PRODUCTS.get(key)
        if table is None:
            if len(_PRODUCTS) >= _PRODUCTS_KEYS:
                _PRODUCTS.clear()
            table = _PRODUCTS[key] = [base]
        while len(table) <= k and len(table) < _PRODUCTS_LENGTH:
            value = table[-1] * factor
            if floor is not None and value < floor:
                value = floor
            if value == table[-1]:  # a fixed point: every later product is the same
                return value
            table.append(value)
        if k < len(table):
            return table[k]
        last = table[-1]
    value = last * safe_pow(factor, k - (len(table) - 1))
    return max(value, floor) if floor is not None else value


def plateau_reductions(
    scores, mode: str, threshold: float, threshold_mode: str, patience: int, cooldown: int
) -> int:
    """How many times ``torch.optim.lr_scheduler.ReduceLROnPlateau`` reduces the rate
    when ``step(score)`` is called with each of ``scores`` in turn."""
    best = math.inf if mode == "min" else -math.inf
    bad = cooldown_left = reductions = 0
    for score in scores:
        if mode == "min" and threshold_mode == "rel":
            better = score < best * (1.0 - threshold)
        elif mode == "min":
            better = score < best - threshold
        elif threshold_mode == "rel":
            better = score > best * (threshold + 1.0)
        else:
            better = score > best + threshold
        if better:
            best, bad = score, 0
        else:
            bad += 1
        if cooldown_left > 0:
            cooldown_left -= 1
            bad = 0
        if bad > patience:
            reductions += 1
            cooldown_left, bad = cooldown, 0
    return reductions
