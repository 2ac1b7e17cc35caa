"""The ``mxopt`` command line (also ``python -m mxopt``).

    mxopt demo [--optimizer NAME] [--schedule NAME] [--epochs N] [--seed S]
               [--config FILE] [--plot PNG] [--distributed [sum|ordered]]
    mxopt lr-find [--optimizer NAME] [--num-steps N] [--seed S] [--plot PNG]
    mxopt plot-schedule CONFIG [--epochs E] [--batches-per-epoch B] [--output PNG]
    mxopt bench [benchmark options]
    mxopt warmup [--dtypes float32 float64]
    mxopt --version

Errors are printed as one line, ``mxopt: error: ...``, with exit status 1 (2 for
a bad command line).
"""

from __future__ import annotations

import argparse
import sys

from mxopt.core.checks import shown

_PLOT_HINT = 'pictures need matplotlib: pip install "mxopt[plot]"'


#: Where ``mxopt demo`` draws its runs unless told otherwise.
DEMO_PICTURE = "demo.png"


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _demo(args) -> int:
    from mxopt.cli.demo import main_demo

    plot = None if args.no_plot else (args.plot or DEMO_PICTURE)
    # the default picture is a bonus: without matplotlib, train anyway and say at the end
    # how to get it (an explicit --plot without matplotlib is an error instead)
    missing_picture = args.plot is None and plot is not None and not _have_matplotlib()
    code = main_demo(
        optimizers=args.optimizer,
        schedule=args.schedule,
        epochs=args.epochs,
        seed=args.seed,
        config=args.config,
        plot=None if missing_picture else plot,
        progress=not args.no_progress,
        distributed=args.distributed,
    )
    if args.distributed is not None and missing_picture:
        from mxopt.cli.demo import world

        missing_picture = world()[1] == 0  # say it once, on rank 0
    if missing_picture and code == 0:
        print(f"mxopt: no picture: {_PLOT_HINT} (or --no-plot)", file=sys.stderr)
    return code


def _lr_find(args) -> int:
    from mxopt.cli.demo import main_lr_find

    return main_lr_find(
        optimizer=args.optimizer, plot=args.plot, seed=args.seed, num_steps=args.num_steps
    )


def _plot_schedule(args) -> int:
    import mxopt
    from mxopt.persist.config import load

    if not _have_matplotlib():
        raise CommandError(_PLOT_HINT)
    loaded = load(args.config, section=args.section)
    if isinstance(loaded, mxopt.AbstractOptimizer):
        schedule = loaded.opts.lr_scheduler if hasattr(loaded.opts, "lr_scheduler") else None
        if schedule is None:
            raise CommandError(f"{args.config}: the optimizer has no lr_scheduler to plot")
    elif isinstance(loaded, mxopt.AbstractSchedule):
        schedule = loaded
    else:
        raise CommandError(
            f"{args.config}: expected a schedule or an optimizer, got {shown(loaded)}"
        )
    mxopt.plot_schedules(
        {type(schedule).__name__: schedule},
        epochs=args.epochs,
        batches_per_epoch=args.batches_per_epoch,
        path=args.output,
        title=f"{args.config}: {args.epochs} epochs x {args.batches_per_epoch} batches",
    )
    print(f"wrote {args.output}")
    return 0


def _bench(args) -> int:
    from mxopt.cli.bench import main as bench_main

    return bench_main(args.rest)


def _warmup(args) -> int:
    """Compile (or load from Numba's disk cache) every CPU kernel ahead of time."""
    import numpy as np

    from mxopt.cli.warmup import warmup

    warmup([np.dtype(d) for d in args.dtypes])
    return 0


class CommandError(Exception):
    """An error reported as one line by the command line."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {shown(text)}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _KeepLines(argparse.HelpFormatter):
    """Wraps a description or epilog of one line; keeps the lines of one with several
    (the examples)."""

    def _fill_text(self, text, width, indent):
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _one_of(names):
    """An argparse type: a name of ``names``, matched case-insensitively when only one
    name matches that way; otherwise a usage error suggesting the close names."""
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)

    def parse(text: str) -> str:
        if text in names:
            return text
        matches = by_lower.get(text.lower(), [])
        if len(matches) == 1:
            return matches[0]
        from mxopt.persist.registry import suggestion

        hint = suggestion(text, matches or names) or f" (choose from {', '.join(names)})"
        raise argparse.ArgumentTypeError(f"unknown name {shown(text)}{hint}")

    return parse


def build_parser() -> argparse.ArgumentParser:
    import mxopt
    from mxopt.cli.demo import DEMO_OPTIMIZERS, DEMO_SCHEDULES

    parser = argparse.ArgumentParser(
        prog="mxopt",
        description="mxopt: MXNet.jl-style optimizers and schedules for hand-written training "
        "loops on NumPy and CuPy arrays, with fused Numba and CUDA kernels.",
    )
    parser.add_argument("--version", action="version", version=f"mxopt {mxopt.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    optimizer_names = sorted({*DEMO_OPTIMIZERS, *mxopt.OPTIMIZERS} - {"Lookahead"})
    demo = commands.add_parser(
        "demo",
        help="train the built-in MLP on the spirals data set",
        description="Train a 2-layer MLP on three interleaved spirals (a built-in data set) "
        "and print loss, accuracy and learning rate per epoch. By default it trains twice: "
        "SGD with momentum, and ADAM under an Exp schedule.",
        epilog="examples:\n"
        "  mxopt demo\n"
        "  mxopt demo --optimizer radam --schedule one-cycle --epochs 20 --plot demo.png\n"
        "  mxopt demo --config my-optimizer.toml\n\n"
        "my-optimizer.toml:\n"
        "  [optimizer]\n"
        '  "@optimizers" = "mxopt.ADAM.v1"\n'
        "  lr = 0.03\n\n"
        '(Thinc-style .cfg files need confection: pip install "mxopt[config]")',
        formatter_class=_KeepLines,
    )
    demo.add_argument(
        "--optimizer", nargs="+", metavar="NAME", default=list(DEMO_OPTIMIZERS),
        type=_one_of(optimizer_names),
        help=f"optimizer(s) to train with: {', '.join(optimizer_names)}, in any case "
        f"(default: {' '.join(DEMO_OPTIMIZERS)})",
    )  # fmt: skip
    demo.add_argument(
        "--schedule", type=_one_of(sorted(DEMO_SCHEDULES)), default=None,
        metavar="{" + ",".join(sorted(DEMO_SCHEDULES)) + "}",
        help="learning-rate schedule over the run (default: each optimizer's own)",
    )  # fmt: skip
    demo.add_argument("--epochs", type=_positive, default=30, help="epochs per run (default 30)")
    demo.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    demo.add_argument(
        "--config", metavar="FILE",
        help='an optimizer config (.toml or .json with "@optimizers" = "mxopt.ADAM.v1", '
        'or a Thinc-style .cfg with mxopt[config]); replaces --optimizer',
    )  # fmt: skip
    demo.add_argument(
        "--plot", metavar="PNG",
        help=f"write loss, accuracy and lr per epoch here (default {DEMO_PICTURE}, "
        "when matplotlib is installed)",
    )  # fmt: skip
    demo.add_argument("--no-plot", action="store_true", help="write no picture")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument(
        "--distributed", nargs="?", const="ordered", choices=["sum", "ordered"], default=None,
        metavar="sum|ordered",
        help="train data-parallel over the ranks of an MPI job with ShardedUpdater "
        "(mpiexec -n 2 python -m mpi4py -m mxopt demo --distributed; without mpiexec, a "
        "world of one): each rank computes the gradients of its part of every batch, only "
        "rank 0 prints. The gradients are summed in rank order (ordered, the default: "
        "the sums of one process) or by MPI's own reduction (sum)",
    )  # fmt: skip
    demo.set_defaults(run=_demo)

    lr_find = commands.add_parser(
        "lr-find",
        help="find a learning rate for the demo model (fastai's lr_find)",
        description="Train the demo MLP for a few mini-batches while the learning rate grows "
        "exponentially from 1e-7 to 10, stop when the loss diverges, print the loss curve "
        "and the suggested learning rates (fastai's valley and steepest rules).",
    )
    lr_find.add_argument(
        "--optimizer", metavar="NAME", default="ADAM", type=_one_of(optimizer_names),
        help=f"the optimizer: {', '.join(optimizer_names)}, in any case (default ADAM)",
    )  # fmt: skip
    lr_find.add_argument("--num-steps", type=_positive, default=100,
                         help="mini-batches of the full sweep (default 100)")  # fmt: skip
    lr_find.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    lr_find.add_argument("--plot", metavar="PNG", help="draw the curve here (needs matplotlib)")
    lr_find.set_defaults(run=_lr_find)

    plot = commands.add_parser(
        "plot-schedule",
        help="draw a schedule from a config file",
        description="Draw the learning-rate schedule of a config file (a schedule, or an "
        "optimizer with an lr_scheduler) over a training run, as a PNG.",
        epilog="example config (TOML):\n"
        "  [schedule]\n"
        '  "@schedules" = "mxopt.LearningRate.OneCycle.v1"\n'
        "  max_lr = 0.1\n"
        "  total_steps = 1000",
        formatter_class=_KeepLines,
    )
    plot.add_argument("config", help="a .cfg, .toml or .json file")
    plot.add_argument("--section", help="the section to read (default: the only one)")
    plot.add_argument("--epochs", type=_positive, default=10, help="epochs (default 10)")
    plot.add_argument("--batches-per-epoch", type=_positive, default=100,
                      help="mini-batches per epoch (default 100)")  # fmt: skip
    plot.add_argument("--output", default="schedule.png", help="PNG to write")
    plot.set_defaults(run=_plot_schedule)

    bench = commands.add_parser(
        "bench",
        help="run the benchmark suite",
        description="Time one optimizer step against the memory limit, NumPy, torch, optax and "
        "Thinc (see `mxopt bench --help-suite`). Options after `bench` go to the suite.",
        add_help=False,
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)

    warmup = commands.add_parser(
        "warmup",
        help="compile and cache every CPU kernel ahead of time",
        description="Compile every kernel for float32 and float64 (serial and parallel, one "
        "array and packed buffers) into Numba's on-disk cache, so that later runs start at "
        "once.",
    )
    warmup.add_argument(
        "--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"],
        help="dtypes to compile for (default both)",
    )  # fmt: skip
    warmup.set_defaults(run=_warmup)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to the suite's own parser (argparse's REMAINDER
        # does not take arguments that start with "-" when nothing comes before them).
        rest = argv[1:]
        args = argparse.Namespace(command="bench", run=_bench, rest=rest)
        if rest[:1] == ["--help-suite"]:
            args.rest = ["--help"]
    else:
        args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("mxopt: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, ImportError, OSError, FloatingPointError,
            RuntimeError) as error:  # fmt: skip
        message = " ".join(str(error).split())
        print(f"mxopt: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
