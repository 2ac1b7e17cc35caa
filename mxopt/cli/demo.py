"""The built-in demo: a 2-layer MLP learns three interleaved spirals.

Everything is here and in NumPy: the data set (generated from a seed, no
download), the model, its hand-written backward pass and the training loop,
which drives an :class:`~mxopt.OptimizationState` and an mxopt updater exactly
as a user's loop would. ``python -m mxopt demo`` runs it.

:func:`train_distributed` is the same training, data-parallel over the ranks of an MPI
job with :class:`~mxopt.distributed.ShardedUpdater` (``mpiexec -n 2 python -m mpi4py -m
mxopt demo --distributed``): every rank computes the gradients of its part of each batch
into a :class:`~mxopt.ParameterBuffer`, the step sums them over the ranks and updates
each rank's share of the model, whose optimizer state only that rank holds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import attrs
import numpy as np

import mxopt
from mxopt import LearningRate, OptimizationState
from mxopt.core.checks import shown

__all__ = [
    "DEMO_OPTIMIZERS",
    "DEMO_SCHEDULES",
    "MLP",
    "describe",
    "main_demo",
    "plot_history",
    "spirals",
    "train",
    "train_distributed",
    "world",
]


def spirals(points_per_class: int = 200, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Points on ``classes`` interleaved spiral arms in 2-D, with their labels."""
    rng = np.random.default_rng(seed)
    x = np.empty((points_per_class * classes, 2), np.float32)
    y = np.empty(points_per_class * classes, np.int64)
    for c in range(classes):
        r = np.linspace(0.05, 1.0, points_per_class)
        theta = np.linspace(c * 4.0, (c + 1) * 4.0, points_per_class)
        theta = theta + rng.normal(scale=noise, size=points_per_class)
        rows = slice(c * points_per_class, (c + 1) * points_per_class)
        x[rows] = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
        y[rows] = c
    order = rng.permutation(len(y))
    return x[order], y[order]


@dataclass
class MLP:
    """``softmax(relu(x W1 + b1) W2 + b2)`` with its backward pass written out."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @classmethod
    def create(cls, inputs: int, hidden: int, outputs: int, seed: int = 0) -> MLP:
        rng = np.random.default_rng(seed)
        return cls(
            w1=(rng.normal(size=(inputs, hidden)) * np.sqrt(2.0 / inputs)).astype(np.float32),
            b1=np.zeros(hidden, np.float32),
            w2=(rng.normal(size=(hidden, outputs)) * np.sqrt(1.0 / hidden)).astype(np.float32),
            b2=np.zeros(outputs, np.float32),
        )

    def parameters(self) -> dict:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.w1 + self.b1, 0) @ self.w2 + self.b2

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """Mean cross-entropy, and gradients *summed* over the batch (MXNet's convention:
        the optimizer divides by ``batch_size``)."""
        pre = x @ self.w1 + self.b1
        hidden = np.maximum(pre, 0)
        logits = hidden @ self.w2 + self.b2
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(len(y)), y].mean()
        d_logits = np.exp(log_probs)
        d_logits[np.arange(len(y)), y] -= 1  # d(sum of losses)/d(logits)
        d_hidden = (d_logits @ self.w2.T) * (pre > 0)
        grads = {
            "w1": x.T @ d_hidden,
            "b1": d_hidden.sum(axis=0),
            "w2": hidden.T @ d_logits,
            "b2": d_logits.sum(axis=0),
        }
        return float(loss), {k: g.astype(np.float32) for k, g in grads.items()}

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.logits(x).argmax(axis=1) == y).mean())


def _demo_sgd():
    return mxopt.SGD(lr=0.2, momentum=0.9, weight_decay=1e-4)


def _demo_adam():
    return mxopt.ADAM(lr_scheduler=LearningRate.Exp(0.02, gamma=0.93), weight_decay=1e-5)


#: The demo's default runs: SGD with momentum, and ADAM under an Exp schedule.
DEMO_OPTIMIZERS = {"sgd-momentum": _demo_sgd, "adam-exp": _demo_adam}

#: Learning rates that train the demo well in 10-30 epochs (other options: defaults).
DEMO_LR = {
    "SGD": 0.3, "ADAM": 0.03, "AdamW": 0.03, "Nadam": 0.03, "RAdam": 0.1, "QHAdam": 0.03,
    "AdaMax": 0.1, "AdaGrad": 0.3, "AdaDelta": 1.0, "RMSProp": 0.03, "Adafactor": 0.3,
    "LAMB": 0.03, "LARS": 1.0, "Lion": 0.01, "Rprop": 0.1, "ASGD": 1.0,
    "ADOPT": 0.03, "AdaBelief": 0.03, "ScheduleFreeSGD": 0.3, "ScheduleFreeAdamW": 0.01,
    "Prodigy": 1.0,
    "Muon": 0.05,
    "SOAP": 0.03,
    "AdEMAMix": 0.03, "Adan": 0.03,
}  # fmt: skip


def _peak(optimizer) -> float:
    return DEMO_LR.get(type(optimizer).__name__, 0.01)


#: Learning-rate schedules for ``--schedule``, over the whole run (``total`` updates),
#: peaking at the optimizer's demo learning rate.
DEMO_SCHEDULES = {
    "constant": lambda lr, total: LearningRate.Fixed(lr),
    "exp": lambda lr, total: LearningRate.Exp(lr, gamma=0.93),
    "step": lambda lr, total: LearningRate.Step(lr, step_size=max(1, total // 3), gamma=0.3),
    "cosine": lambda lr, total: LearningRate.CosineAnnealing(lr, steps=total),
    "warmup-cosine": lambda lr, total: LearningRate.WarmupCosine(
        lr, warmup_steps=max(1, total // 10), decay_steps=total
    ),
    "one-cycle": lambda lr, total: LearningRate.OneCycle(lr, total_steps=total),
    "sgdr": lambda lr, total: LearningRate.CosineRestarts(
        lr, period=max(1, total // 7), period_mult=2
    ),  # fmt: skip
}


def demo_optimizer(name: str, schedule: str | None, total_updates: int):
    """The optimizer of a demo run: a preset, or an optimizer by name with its demo lr."""
    if name in DEMO_OPTIMIZERS:
        optimizer = DEMO_OPTIMIZERS[name]()
        lr = optimizer.opts.lr_scheduler.lr if optimizer.opts.lr_scheduler else optimizer.opts.lr
    else:
        optimizer = mxopt.OPTIMIZERS[name](lr=DEMO_LR.get(name, 0.01))
        lr = _peak(optimizer)
    if schedule is not None:
        optimizer.opts.lr_scheduler = DEMO_SCHEDULES[schedule](lr, total_updates)
    return optimizer


def describe(optimizer, batch_size: int = 32) -> str:
    """The optimizer as it starts: its name and the option values in effect at the first
    update (the learning rate from ``lr_scheduler``, the momentum from
    ``momentum_scheduler`` when they are set), then the schedules themselves."""
    from mxopt.optimizers.base import option_values

    state = OptimizationState(batch_size=batch_size)
    state.begin_epoch()
    state.begin_batch()
    opts = getattr(optimizer, "opts", None)
    try:
        values = vars(option_values(opts, state))
    except Exception:  # a wrapper or another package's optimizer: its own repr
        return repr(optimizer)
    shown_values, schedules = [], []
    for field in attrs.fields(type(opts)):
        name = field.name
        value = getattr(opts, name)
        if name.endswith("_scheduler"):
            if value is not None:
                schedules.append(f"{name.removesuffix('_scheduler')} schedule {value!r}")
            continue
        value = values.get(name, value)
        scheduler = getattr(opts, f"{name}_scheduler", None)
        if scheduler is not None and name != "lr":
            try:
                value = scheduler.value(state)
            except Exception:
                pass
            if isinstance(value, tuple):  # Nadam's (mu_t, mu_t+1)
                value = value[0]
        text = repr(float(f"{value:.6g}") if isinstance(value, float) else value)
        shown_values.append(f"{name}={text}")
    text = f"{type(optimizer).__name__} at the first update: {', '.join(shown_values)}"
    return "; ".join([text, *schedules])


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float
    lr: float


def _batches_per_epoch(batch_size: int, seed: int) -> int:
    x, _ = spirals(seed=seed)
    return int(0.8 * len(x)) // batch_size


def train(optimizer, epochs: int = 30, batch_size: int = 32, seed: int = 0, report=None,
          progress=None):  # fmt: skip
    """Train the demo MLP on the spirals with ``optimizer``; returns one record per epoch.

    ``report(record)`` is called after every epoch, ``progress()`` after every batch.
    """
    x, y = spirals(seed=seed)
    split = int(0.8 * len(y))
    x_train, y_train = x[:split], y[:split]
    model = MLP.create(2, 64, 3, seed=seed)
    state = OptimizationState(batch_size=batch_size)
    optimizer.state = state
    updater = mxopt.get_updater(optimizer)
    history = []
    for batches in _epochs(state, epochs, split, batch_size, seed):
        losses = []
        for rows in batches:
            loss, grads = model.loss_and_grads(x_train[rows], y_train[rows])
            losses.append(loss)
            state.begin_batch()
            for name, weight in model.parameters().items():
                updater(name, grads[name], weight)
            if progress is not None:
                progress()
        _end_epoch(history, report, model, optimizer, losses, x, y, split)
    return history


def _epochs(state, epochs: int, split: int, batch_size: int, seed: int):
    """Per epoch, once ``state.begin_epoch()`` is called: the row indices of its batches (a
    seeded shuffle of the ``split`` training rows; the last incomplete batch is dropped)."""
    rng = np.random.default_rng(seed + 1)
    for _ in range(epochs):
        state.begin_epoch()
        order = rng.permutation(split)
        yield [order[s : s + batch_size] for s in range(0, split - batch_size + 1, batch_size)]


def _end_epoch(history, report, model, optimizer, losses, x, y, split) -> None:
    """The epoch's record (mean batch loss, accuracies on the training and validation
    parts, the learning rate), kept and reported."""
    record = EpochRecord(
        epoch=optimizer.state.curr_epoch,
        loss=float(np.mean(losses)),
        train_accuracy=model.accuracy(x[:split], y[:split]),
        val_accuracy=model.accuracy(x[split:], y[split:]),
        lr=float(optimizer.lr_value(optimizer.state)),
    )
    history.append(record)
    if report is not None:
        report(record)


def world():
    """``(collectives, rank, size)`` of this process's job: over ``MPI.COMM_WORLD`` when
    mpi4py and an MPI library are installed (a world of one without ``mpiexec``), else
    mxopt's world of one process (:func:`mxopt.distributed.collectives_for`)."""
    from mxopt.distributed import collectives_for

    collectives = collectives_for(None, "numpy")
    return collectives, collectives.rank, collectives.size


def train_distributed(optimizer, epochs: int = 30, batch_size: int = 32, seed: int = 0,
                      report=None, progress=None, comm=None, reduce: str = "sum"):  # fmt: skip
    """:func:`train`, data-parallel over the ranks of ``comm`` (default: :func:`world`).

    Every rank builds the same data and model from ``seed`` and draws the same batches;
    rank ``r`` computes the gradients of its part of each batch (``batch_size`` is the
    global batch, split as evenly as it goes), and a
    :class:`~mxopt.distributed.ShardedUpdater` sums them over the ranks and updates the
    model, each rank holding the optimizer state of its share only. Every rank returns the
    same records (the loss is averaged over the whole batch); ``report`` and ``progress``
    are called on every rank (pass them on rank 0 only to print once). With
    ``reduce="ordered"`` the gradients are summed in rank order.
    """
    from mxopt.distributed import ShardedUpdater

    if comm is None:
        comm = world()[0]
    x, y = spirals(seed=seed)
    split = int(0.8 * len(y))
    x_train, y_train = x[:split], y[:split]
    model = MLP.create(2, 64, 3, seed=seed)
    # the model's arrays become views of one flat buffer, which the sharded step updates
    buffer = mxopt.ParameterBuffer.from_arrays(model.parameters())
    model = MLP(**buffer.weights)
    state = OptimizationState(batch_size=batch_size)  # the global batch
    optimizer.state = state
    updater = ShardedUpdater(optimizer, buffer, comm, reduce=reduce)
    updater.broadcast_weights()  # the same start everywhere (here it already is)
    rank, size = updater.rank, updater.size
    collectives = updater.collectives
    history = []
    for batches in _epochs(state, epochs, split, batch_size, seed):
        losses = []
        for batch in batches:
            rows = np.array_split(batch, size)[rank]
            if len(rows):
                loss, grads = model.loss_and_grads(x_train[rows], y_train[rows])
                for name, grad in grads.items():
                    buffer.grads[name][...] = grad
            else:  # more ranks than examples in a batch
                loss = 0.0
                buffer.grad[...] = 0
            # the mean loss of the whole batch, from every rank's sum over its part
            sums = collectives.all_gather_values(np.array([loss * len(rows)]), [1] * size)
            losses.append(float(sums.sum()) / batch_size)
            state.begin_batch()
            updater.step()
            if progress is not None:
                progress()
        _end_epoch(history, report, model, optimizer, losses, x, y, split)
    return history


def plot_history(histories: dict, path) -> None:
    """A PNG of loss, validation accuracy and learning rate per epoch, one line per run."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'the demo\'s picture needs matplotlib: pip install "mxopt[plot]"'
        ) from error
    figure = Figure(figsize=(12, 3.6))
    axes = figure.subplots(1, 3)
    for name, history in histories.items():
        epochs = [r.epoch for r in history]
        axes[0].plot(epochs, [r.loss for r in history], label=name)
        axes[1].plot(epochs, [r.val_accuracy for r in history], label=name)
        axes[2].plot(epochs, [r.lr for r in history], label=name)
    for ax, title in zip(axes, ("training loss", "validation accuracy", "learning rate"),
                         strict=True):  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main_demo(
    optimizers=("sgd-momentum", "adam-exp"),
    epochs: int = 30,
    seed: int = 0,
    schedule: str | None = None,
    config=None,
    plot=None,
    progress: bool = False,
    distributed: str | None = None,
) -> int:
    """Run the demo for each named optimizer (or the one in ``config``), printing a table per
    run and a summary; with ``plot``, write a PNG of the runs.

    ``distributed``: ``None`` (one process), or ``"sum"`` or ``"ordered"``, the reduction
    of :func:`train_distributed` over the ranks of this MPI job (a world of one without
    ``mpiexec``); only rank 0 prints and draws."""
    comm, rank, size = world() if distributed is not None else (None, 0, 1)
    if rank != 0:
        plot, progress = None, False
    echo = print if rank == 0 else _silent
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError('--plot needs matplotlib: pip install "mxopt[plot]"') from None
    batches = _batches_per_epoch(32, seed)
    if config is not None:
        from mxopt.persist.config import load

        runs = {str(config): lambda: load(config, section=None)}
    else:
        runs = {name: (lambda n=name: demo_optimizer(n, schedule, epochs * batches))
                for name in optimizers}  # fmt: skip
    bar = _progress_bar(progress, epochs * batches * len(runs))
    if distributed is not None:
        low, high = 32 // size, -(-32 // size)
        part = str(low) if low == high else f"{low}-{high}"
        echo(f"data-parallel on {size} rank(s) (ShardedUpdater, reduce={distributed!r}): "
             f"each rank computes the gradients of {part} of the 32 examples of a batch "
             f"and holds the optimizer state of its share of the model")  # fmt: skip
    summary, histories = [], {}
    for name, make in runs.items():
        optimizer = make()
        if not isinstance(optimizer, mxopt.AbstractOptimizer):
            raise TypeError(f"{name}: the config describes {shown(optimizer)}, not an optimizer")
        if rank == 0:
            _write(bar, f"\n== {name}: {describe(optimizer)}")
            _write(bar, f"{'epoch':>5} {'loss':>8} {'train acc':>9} {'val acc':>8} {'lr':>10}")
        started = time.perf_counter()

        def report(r):
            _write(bar, f"{r.epoch:5d} {r.loss:8.4f} {r.train_accuracy:9.3f} "
                        f"{r.val_accuracy:8.3f} {r.lr:10.3g}")  # fmt: skip

        options = dict(
            epochs=epochs,
            seed=seed,
            report=report if rank == 0 else None,
            progress=None if bar is None else lambda: bar.update(1),
        )
        if distributed is None:
            history = train(optimizer, **options)
        else:
            history = train_distributed(optimizer, comm=comm, reduce=distributed, **options)
        histories[name] = history
        summary.append((name, history[0], history[-1], time.perf_counter() - started))
    if bar is not None:
        bar.close()
    echo("\nsummary: the spirals need a non-linear model; chance is 0.333. The times include "
         "compiling the kernels on first use (`mxopt warmup` compiles them ahead)")  # fmt: skip
    ranks = "" if distributed is None else f", {size} rank(s)"
    for name, first, last, seconds in summary:
        echo(
            f"  {name:13s} loss {first.loss:.3f} -> {last.loss:.3f}, "
            f"val accuracy {first.val_accuracy:.3f} -> {last.val_accuracy:.3f} "
            f"({seconds:.1f} s{ranks})"
        )
    if plot is not None:
        plot_history(histories, plot)
        echo(f"wrote {plot}")
    return 0


def _silent(*args, **kwargs) -> None:
    """``print`` on the ranks other than 0."""


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, unit="batch", leave=False, file=sys.stderr, disable=None)


def _write(bar, line: str) -> None:
    if bar is None:
        print(line, flush=True)
    else:
        bar.write(line, file=sys.stdout)


def main_lr_find(optimizer: str = "ADAM", plot=None, seed: int = 0, num_steps: int = 100,
                 batch_size: int = 32) -> int:  # fmt: skip
    """``mxopt lr-find``: :func:`mxopt.lr_find` on the demo MLP and the spirals, with
    ``optimizer`` (a demo preset or an optimizer name, its other options the demo's);
    prints the curve every few steps and the suggested learning rates."""
    if num_steps < 2:
        raise ValueError(f"--num-steps must be at least 2, got {num_steps}")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError('--plot needs matplotlib: pip install "mxopt[plot]"') from None
    x, y = spirals(seed=seed)
    split = int(0.8 * len(y))
    x_train, y_train = x[:split], y[:split]
    model = MLP.create(2, 64, 3, seed=seed)
    made = demo_optimizer(optimizer, None, num_steps)
    rng = np.random.default_rng(seed + 1)
    per_epoch = split // batch_size
    orders = []

    def loss_and_grad(step):
        while len(orders) <= step // per_epoch:
            orders.append(rng.permutation(split))
        start = (step % per_epoch) * batch_size
        rows = orders[step // per_epoch][start : start + batch_size]
        return model.loss_and_grads(x_train[rows], y_train[rows])

    print(f"lr-find on the demo MLP: {type(made).__name__}, lr from 1e-07 to 10 over "
          f"{num_steps} mini-batches of {batch_size}")  # fmt: skip
    result = mxopt.lr_find(
        loss_and_grad, model.parameters(), made, num_steps=num_steps, batch_size=batch_size
    )
    print(f"{'step':>5} {'lr':>10} {'loss':>8} {'smoothed':>8}")
    every = max(1, len(result.lrs) // 20)
    for i in [*range(0, len(result.lrs) - 1, every), len(result.lrs) - 1]:
        print(f"{i:5d} {result.lrs[i]:10.3g} {result.losses[i]:8.4f} {result.smoothed[i]:8.4f}")
    if result.diverged:
        print(f"stopped after {len(result.lrs)} mini-batches: the loss diverged")

    def text(lr):
        return "none (the curve is too short)" if lr is None else f"{lr:.3g}"

    print(f"suggested: valley {text(result.valley)}, steepest {text(result.steepest)}")
    if plot is not None:
        result.plot(plot, title=f"lr-find: {type(made).__name__} on the demo MLP")
        print(f"wrote {plot}")
    return 0
