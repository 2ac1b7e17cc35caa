"""A picture of one or several schedules over a training run (needs matplotlib).

``pip install "mxopt[plot]"`` installs matplotlib; importing mxopt never imports it.
"""

from __future__ import annotations

import os

from mxopt.core.checks import shown
from mxopt.core.schedule import AbstractSchedule
from mxopt.schedules.values import schedule_values

__all__ = ["plot_schedules"]

_INSTALL = 'mxopt.plot_schedules needs matplotlib: pip install "mxopt[plot]"'


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(_INSTALL) from error
    return Figure


def _named(schedules) -> list[tuple[str, object]]:
    if isinstance(schedules, dict):
        return [(str(k), v) for k, v in schedules.items()]
    if isinstance(schedules, AbstractSchedule):
        return [(type(schedules).__name__, schedules)]
    if isinstance(schedules, (list, tuple)):
        named = []
        for item in schedules:
            if isinstance(item, tuple) and len(item) == 2:
                named.append((str(item[0]), item[1]))
            else:
                named.append((type(item).__name__, item))
        return named
    raise TypeError(
        f"plot_schedules: schedules must be a schedule, a list of schedules or a dict "
        f"of label -> schedule, got {shown(schedules)}"
    )


def plot_schedules(
    schedules,
    epochs: int,
    batches_per_epoch: int,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    ylabel: str = "learning rate",
    scores=None,
    log_scale: bool = False,
    figsize: tuple[float, float] = (9.0, 4.8),
    dpi: int = 120,
):
    """Plot schedules over ``epochs`` epochs of ``batches_per_epoch`` mini-batches.

    ``schedules`` is one schedule, a list of schedules (or of ``(label,
    schedule)`` pairs) or a dict ``{label: schedule}``. Each is evaluated at
    every update of the run with :func:`mxopt.schedule_values` (``scores``, one
    per epoch, feed :class:`~mxopt.LearningRate.Plateau`) and drawn as a step
    line: the value held during each iteration. The bottom axis counts epochs
    (iteration ``i`` of epoch ``e`` sits at ``e - 1 + (i - 1) / batches_per_epoch``),
    the top axis counts iterations, with a tick per iteration when there are at
    most 200 of them.

    Writes a PNG (or any format matplotlib knows from the suffix) to ``path``
    when given, and returns the matplotlib ``Figure``. Raises ``ImportError``
    with the install command when matplotlib is missing.
    """
    Figure = _figure_class()
    from matplotlib.ticker import AutoMinorLocator, MaxNLocator, MultipleLocator

    named = _named(schedules)
    figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = figure.add_subplot()
    n = epochs * batches_per_epoch
    x = [i / batches_per_epoch for i in range(n + 1)]
    styles = ["-", "--", "-.", ":"]
    for k, (label, scheduler) in enumerate(named):
        values = schedule_values(scheduler, epochs, batches_per_epoch, scores=scores)
        if values.ndim != 1:
            raise ValueError(f"plot_schedules: {label} gives {values.shape[1:]}-shaped values")
        ys = list(values) + [values[-1]] if n else []
        axes.step(x, ys, where="post", label=label, linestyle=styles[k % len(styles)], lw=1.8)
    axes.set_xlim(0, max(epochs, 1))
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    if log_scale:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(max(epochs, 1), 20)))
    axes.grid(True, which="major", alpha=0.35)
    top = axes.secondary_xaxis(
        "top",
        functions=(lambda e: e * batches_per_epoch, lambda i: i / batches_per_epoch),
    )
    top.set_xlabel("iteration t = curr_iter - 1 (each step of a line is one iteration)")
    if n <= 200:
        axes.xaxis.set_minor_locator(MultipleLocator(1 / batches_per_epoch))
        top.xaxis.set_minor_locator(MultipleLocator(1))
    else:
        top.xaxis.set_minor_locator(AutoMinorLocator())
    if title:
        axes.set_title(title)
    if len(named) > 1 or isinstance(schedules, dict):
        figure.legend(loc="outside lower center", fontsize="small", ncols=min(len(named), 2))
    if path is not None:
        figure.savefig(os.fspath(path), dpi=dpi)
    return figure
