"""The benchmark suite: one optimizer step, mxopt against the memory limit and its peers.

``python -m mxopt bench`` (or ``python benchmarks/run.py``) times one step of
SGD with momentum, ADAM and AdamW in several regimes:

* one float32 tensor of 1M, 16M and 64M elements;
* the tensor shapes of a BERT-base encoder (199 tensors, 110M parameters);
* 1000 tensors of 1024 elements;
* one 16-element tensor (the per-call overhead, in microseconds);
* ``distributed``: :class:`~mxopt.distributed.ShardedUpdater` over the BERT-base shapes on
  1, 2 and 4 ranks of an MPI job (step time, its communication and update, bytes
  communicated, optimizer state per rank; :mod:`mxopt.cli.bench_distributed`), when
  mpi4py and ``mpiexec`` are installed (``pip install "mxopt[mpi]"``).

Implementations, alternated inside every repeat so machine noise hits them
alike; each figure is the median of the repeats after a warm-up:

* ``mxopt per-tensor``: ``updater(index, grad, weight)`` for every tensor, with
  the default safety check for NaN/inf gradients;
* ``mxopt update_many``: one ``updater.update_many(indices, grads, weights)`` over the
  list of tensors (one compiled call for a list of NumPy arrays);
* ``mxopt packed``: the same tensors in a :class:`~mxopt.ParameterBuffer`,
  one ``updater.update_buffer(buffer)``;
* ``mxopt packed, unchecked``: the same with ``nonfinite="apply"`` (what torch
  and the others do: no check);
* ``memory limit``: a Numba kernel that reads and writes the same bytes as the
  step, with trivial arithmetic (over the packed buffer), i.e. the speed of
  memory on this machine;
* ``numpy``: the update written with NumPy array operations, tensor by tensor;
* ``torch for-loop / foreach / fused``, ``optax (jit)`` and ``thinc``, when
  installed.

Bandwidth counts the bytes a fused step must move: 20 per element for
SGD-momentum (read w, g, v; write w, v) and 28 for ADAM and AdamW (read w, g, m,
v; write w, m, v).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import mxopt
from mxopt.cli import bench_distributed as distributed
from mxopt.cli import bench_peers as peers
from mxopt.cli.bench_peers import HYPER, PEERED
from mxopt.cli.bench_peers import mxopt_optimizer as _mxopt_optimizer
from mxopt.cli.bench_report import DIRECT_KERNEL, chart, report

__all__ = ["REGIMES", "bert_base_shapes", "main", "run_suite"]

#: The optimizers compared with their peers (NumPy, torch, optax, Thinc). Any other name of
#: ``mxopt.OPTIMIZERS`` (with its default options) is timed for mxopt and the memory limit.


def arrays_per_step(name: str) -> int:
    """The arrays a step touches: weight, gradient and the state arrays shaped like it."""
    if name in PEERED:
        return {"sgd-momentum": 3, "adam": 4, "adamw": 4}[name]
    spec = mxopt.OPTIMIZERS[name]().state_spec((1,))
    return 2 + sum(1 for value in spec.values() if not isinstance(value, tuple))


def bytes_per_element(name: str) -> int:
    """float32 bytes a fused step moves per element: reads w, g and the state, writes w and
    the state (20 for SGD with momentum, 28 for Adam)."""
    return 4 * (2 * arrays_per_step(name) - 1)


def bert_base_shapes() -> list:
    """Parameter shapes of a BERT-base encoder (L=12, H=768, A=12, vocabulary 30522)."""
    return distributed.bert_like_shapes(30522, 512, 768, 3072, 12)


REGIMES = {
    "1M": lambda: [(1 << 20,)],
    "16M": lambda: [(16 << 20,)],
    "64M": lambda: [(64 << 20,)],
    "bert-base": bert_base_shapes,
    "1000x1k": lambda: [(1024,)] * 1000,
    "per-call-16": lambda: [(16,)],
}

#: Regimes that are not one process timing a step (their own module, their own table).
DISTRIBUTED = "distributed"
#: ``--quick``: the small regimes (the distributed one with small shapes).
QUICK = ["1M", "1000x1k", "per-call-16", DISTRIBUTED]


# -- implementations ---------------------------------------------------------------------


def _state():
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    state.begin_batch()
    return state


def _mxopt_per_tensor(name, shapes, rng):
    updater = mxopt.get_updater(_mxopt_optimizer(name, _state()))
    weights = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    pairs = list(enumerate(zip(grads, weights, strict=True)))

    def step():
        for i, (g, w) in pairs:
            updater(i, g, w)

    return step


def _mxopt_update_many(name, shapes, rng):
    updater = mxopt.get_updater(_mxopt_optimizer(name, _state()))
    weights = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    indices = list(range(len(shapes)))
    return lambda: updater.update_many(indices, grads, weights)


def _mxopt_one_call(name, shapes, rng, weights_per_step):
    """One ``updater(index, grad, weight)`` call per ``step()``: the next of
    ``weights_per_step`` 16-element weights, a new mini-batch after each round, so the host
    scalar math is shared by the calls of a step as in a training loop (with
    ``weights_per_step=1`` every call is a new update of the weight and redoes it; the
    loop's ``begin_batch`` is then left out of the figure, which is the updater's own)."""
    state = _state()
    updater = mxopt.get_updater(_mxopt_optimizer(name, state))
    weights = [rng.standard_normal(shapes[0], dtype=np.float32) for _ in range(weights_per_step)]
    grad = rng.standard_normal(shapes[0], dtype=np.float32)
    position = [0]

    def step():
        k = position[0]
        if k == 0 and weights_per_step > 1:
            state.begin_batch()
        updater(k, grad, weights[k])
        position[0] = (k + 1) % weights_per_step

    return step


def _compiled_kernel(name, shapes, rng):
    """The floor of a call: the optimizer's compiled kernel called directly (its entry
    point, no dispatch) on one weight's arrays with the step's scalars ready."""
    from mxopt.kernels import cpu
    from mxopt.optimizers.base import NO_MULTIPLIERS
    from mxopt.training.engine import host_scalars

    state = _state()
    updater = mxopt.get_updater(_mxopt_optimizer(name, state))
    weight = rng.standard_normal(shapes[0], dtype=np.float32)
    grad = rng.standard_normal(shapes[0], dtype=np.float32)
    updater(0, grad, weight)
    optimizer, weight_state = updater.optimizer, updater.states[0]
    kernel = optimizer.kernel()
    entry = cpu.entry_point(kernel, weight.dtype)
    arrays = weight_state.arrays_for(kernel)
    scalars = host_scalars(optimizer, state, weight_state.step + 1, None, NO_MULTIPLIERS)
    return lambda: entry(weight, grad, arrays, scalars, True)


def _mxopt_packed(name, shapes, rng, nonfinite="raise"):
    updater = mxopt.get_updater(_mxopt_optimizer(name, _state()), nonfinite=nonfinite)
    buffer = mxopt.ParameterBuffer(dict(enumerate(shapes)))
    buffer.weight[...] = rng.standard_normal(buffer.weight.size, dtype=np.float32)
    buffer.grad[...] = rng.standard_normal(buffer.grad.size, dtype=np.float32)
    return lambda: updater.update_buffer(buffer)


def _memory_limit(name, shapes, rng):
    from mxopt.kernels import backends, threads
    from mxopt.kernels import cpu as _cpu

    total = sum(int(np.prod(s)) for s in shapes)
    weight, grad = (rng.standard_normal(total, dtype=np.float32) for _ in range(2))
    # state arrays laid out as mxopt lays out its own (staggered within a page: the best case)
    state = [
        backends.full(weight, backends.NUMPY, total, 0.0, slot=k)
        for k in range(arrays_per_step(name) - 2)
    ]
    arrays = [weight, grad, *state]
    kernel = _memory_kernels()[arrays_per_step(name)]
    scale = np.float32(1e-9)
    if total < _cpu.parallel_min_size() or not threads.pool().parallel:
        return lambda: kernel(*arrays, scale)
    pool = threads.pool()  # cut as mxopt cuts its own steps (mxopt.kernels.cpu)
    pieces = _cpu._chunks(total, pool)

    def step():
        pool.run(lambda k: kernel(*(a[slice(*pieces[k])] for a in arrays), scale), len(pieces))

    return step


_kernels = None


def _memory_kernels():
    """Numba loops moving the bytes of a 3-array and a 4-array step (serial: big arrays are
    cut into chunks for the threads exactly as mxopt's steps are)."""
    global _kernels
    if _kernels is None:
        import numba

        options = dict(cache=True, nogil=True, error_model="numpy")

        def three(w, g, v, a):
            for i in range(w.size):
                x = g[i]
                v[i] = v[i] + x
                w[i] = w[i] + a * x

        def four(w, g, m, v, a):
            for i in range(w.size):
                x = g[i]
                m[i] = m[i] + x
                v[i] = v[i] + x
                w[i] = w[i] + a * x

        _kernels = {3: numba.njit(**options)(three), 4: numba.njit(**options)(four)}
    return _kernels


def implementations(name: str, per_call: bool) -> dict:
    """``{label: factory(shapes, rng) -> step}`` for the installed implementations."""
    if per_call:
        table = {
            "mxopt, 1000 weights per step": lambda s, r: _mxopt_one_call(name, s, r, 1000),
            "mxopt, 1 weight per step": lambda s, r: _mxopt_one_call(name, s, r, 1),
            DIRECT_KERNEL: lambda s, r: _compiled_kernel(name, s, r),
        }
    else:
        table = {"mxopt per-tensor": lambda s, r: _mxopt_per_tensor(name, s, r)}
    if not per_call:
        table["mxopt update_many"] = lambda s, r: _mxopt_update_many(name, s, r)
        table["mxopt packed"] = lambda s, r: _mxopt_packed(name, s, r)
        table["mxopt packed, unchecked"] = lambda s, r: _mxopt_packed(name, s, r, "apply")
        table["memory limit"] = lambda s, r: _memory_limit(name, s, r)
    if name not in PEERED:
        return table
    if not per_call:
        table["numpy"] = lambda s, r: peers.numpy_step(name, s, r)
    if peers.available("torch"):
        for mode in ("for-loop", "foreach", "fused"):
            table[f"torch {mode}"] = lambda s, r, mode=mode: peers.torch_step(name, s, r, mode)
    if peers.available("optax") and not per_call:
        table["optax (jit)"] = lambda s, r: peers.optax_step(name, s, r)
    if peers.available("thinc") and name != "sgd-momentum":
        table["thinc"] = lambda s, r: peers.thinc_step(name, s, r)
    return table


# -- measuring ---------------------------------------------------------------------------


#: Seconds of rest before each timed implementation. torch's and XLA's worker threads keep
#: spinning for a while after their work, taking cores from whatever runs next: without
#: the rest, the implementation timed right after optax measured 1.4-1.5x slower (16M
#: SGD-momentum, 2 cores), with it the same as elsewhere in the round.
PAUSE_S = 0.05


def _repeat_times(steps: dict, repeats: int, inner: int) -> dict:
    """``{label: [seconds per step of each repeat]}``, the steps alternating."""
    for step in steps.values():  # warm-up: compile, fault pages in
        for _ in range(2):
            step()
    times = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():  # alternate: noise hits every implementation alike
            time.sleep(PAUSE_S)
            started = time.perf_counter()
            for _ in range(inner):
                step()
            times[label].append((time.perf_counter() - started) / inner)
    return times


#: Most memory the implementations alive at once may take (arrays and optimizer state).
MEMORY_BUDGET = 6 << 30
ANCHOR = "memory limit"


def _groups(labels: list, elements: int, optimizer: str) -> list:
    """Labels in groups that fit :data:`MEMORY_BUDGET` together, each with the memory-limit
    anchor (big regimes: not every implementation fits in memory at once)."""
    others = [label for label in labels if label != ANCHOR]
    if ANCHOR not in labels:
        return [others]
    per_implementation = 4 * (arrays_per_step(optimizer) + 1) * elements  # + scratch
    size = max(1, MEMORY_BUDGET // max(1, per_implementation) - 1)
    return [[ANCHOR, *others[k : k + size]] for k in range(0, len(others), size)]


def run_regime(regime: str, optimizer: str, repeats: int) -> list:
    """Time every implementation of ``optimizer`` on ``regime``.

    Implementations alternate inside each repeat. When they do not all fit in memory
    together, they run in groups that each include the memory-limit kernel, and each
    percentage of the memory limit is against the limit measured in its own group.
    """
    shapes = REGIMES[regime]()
    per_call = regime.startswith("per-call")
    elements = sum(int(np.prod(s)) for s in shapes)
    factories = implementations(optimizer, per_call)
    inner = 10_000 if per_call else (20 if elements < (4 << 20) else 1)
    medians, limits, samples = {}, {}, {}
    for group in _groups(list(factories), elements, optimizer):
        steps = {}
        for label in group:
            step = factories[label](shapes, np.random.default_rng(0))
            if step is not None:
                steps[label] = step
        group_times = _repeat_times(steps, repeats, inner)
        group_medians = {label: statistics.median(v) for label, v in group_times.items()}
        for label, values in group_times.items():
            samples.setdefault(label, values)
        steps.clear()
        gc.collect()
        for label, seconds in group_medians.items():
            if label == ANCHOR:
                limits.setdefault(ANCHOR, []).append(seconds)
                continue
            medians[label] = seconds
            if ANCHOR in group_medians:
                limits[label] = group_medians[ANCHOR]
    if ANCHOR in limits:
        medians[ANCHOR] = statistics.median(limits.pop(ANCHOR))
        limits[ANCHOR] = medians[ANCHOR]
    # Speed-ups compare the times themselves. Normalising them by each group's memory
    # limit was tried: in the group holding torch's implementations the limit kernel ran
    # about 20% slower than in mxopt's group (64M, both runs), so the interference of one
    # group's neighbours landed on the other group's figures.
    mxopt_best = min(v for k, v in medians.items() if k.startswith("mxopt"))
    rows = []
    for label, seconds in medians.items():
        limit = limits.get(label)
        rows.append(
            {
                "regime": regime,
                "optimizer": optimizer,
                "implementation": label,
                "tensors": len(shapes),
                "elements": elements,
                "ms": seconds * 1e3,
                "us": seconds * 1e6,
                "GB/s": bytes_per_element(optimizer) * elements / seconds / 1e9,
                "percent_of_memory_limit": None if limit is None else 100 * limit / seconds,
                "mxopt_speedup": seconds / mxopt_best,
                "spread": max(samples[label]) / min(samples[label]),
                "repeats_s": samples[label],
            }
        )
    order = list(factories)
    return sorted(rows, key=lambda r: order.index(r["implementation"]))


# -- start-up and memory ---------------------------------------------------------------------


def _subprocess_seconds(code: str, env=None, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        times.append(float(result.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


_FIRST_UPDATE = (
    "import time; t = time.perf_counter(); import numpy as np, mxopt; "
    "s = mxopt.OptimizationState(1, 1, 1, 1); u = mxopt.get_updater(mxopt.ADAM(state=s)); "
    "u(0, np.ones(16, np.float32), np.ones(16, np.float32)); print(time.perf_counter() - t)"
)


def startup_figures() -> dict:
    """Import time, and the first update in a fresh process with a warm and a cold cache."""
    import_seconds = _subprocess_seconds(
        "import time; t = time.perf_counter(); import mxopt; print(time.perf_counter() - t)"
    )
    _subprocess_seconds(_FIRST_UPDATE, repeats=1)  # make sure the cache is warm
    warm = _subprocess_seconds(_FIRST_UPDATE)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = _subprocess_seconds(_FIRST_UPDATE, env=env, repeats=1)
    return {
        "import_s": import_seconds,
        "first_update_warm_cache_s": warm,
        "first_update_cold_cache_s": cold,
    }


def peak_extra_memory() -> dict:
    """Peak memory allocated during one step beyond what exists before it (tracemalloc)."""
    import tracemalloc

    figures = {}
    rng = np.random.default_rng(0)
    shapes = [(1 << 20,)] * 4
    for label, make in (
        ("mxopt per-tensor (adam)", lambda: _mxopt_per_tensor("adam", shapes, rng)),
        ("mxopt packed (adam)", lambda: _mxopt_packed("adam", shapes, rng)),
        ("numpy (adam)", lambda: peers.numpy_step("adam", shapes, rng)),
    ):
        step = make()
        step()
        step()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        figures[label] = max(0, peak - before)
    return figures


# -- GPU ---------------------------------------------------------------------------------------


def gpu_rows(regimes, optimizers, repeats) -> list:
    """The same regimes on the GPU, against the device's copy bandwidth and torch fused CUDA."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return []
    except Exception:  # no CuPy, or no driver
        return []
    rows = []
    for regime in regimes:
        if regime.startswith("per-call") or regime not in REGIMES:
            continue
        shapes = REGIMES[regime]()
        elements = sum(int(np.prod(s)) for s in shapes)
        for optimizer in optimizers:
            rng = np.random.default_rng(0)
            steps = {}
            buffer = mxopt.ParameterBuffer(dict(enumerate(shapes)), xp=cupy)
            buffer.weight[...] = cupy.asarray(rng.standard_normal(elements, dtype=np.float32))
            buffer.grad[...] = cupy.asarray(rng.standard_normal(elements, dtype=np.float32))
            # checked: the non-finite count is one more read of the gradient and a wait for
            # the device; unchecked is what torch's fused step does (no check)
            for label, nonfinite in (("", "raise"), (", unchecked", "apply")):
                updater = mxopt.get_updater(
                    _mxopt_optimizer(optimizer, _state()), nonfinite=nonfinite
                )

                def packed(updater=updater, buffer=buffer):
                    updater.update_buffer(buffer)
                    cupy.cuda.Device().synchronize()

                steps[f"mxopt packed{label} (GPU)"] = packed
            arrays = [cupy.empty(elements, np.float32) for _ in range(arrays_per_step(optimizer))]
            source, target = arrays[0], arrays[1]
            moved = bytes_per_element(optimizer) // 8  # copies moving the same bytes

            def copy_limit(source=source, target=target, moved=moved):
                for _ in range(moved):
                    cupy.copyto(target, source)
                cupy.cuda.Device().synchronize()

            steps["device copy bandwidth"] = copy_limit
            if peers.available("torch"):
                import torch

                if torch.cuda.is_available():
                    params = [torch.randn(s, device="cuda") for s in shapes]
                    for p in params:
                        p.grad = torch.randn_like(p)
                    cls = {
                        "sgd-momentum": torch.optim.SGD,
                        "adam": torch.optim.Adam,
                        "adamw": torch.optim.AdamW,
                    }[optimizer]
                    extra = {"momentum": HYPER["momentum"]} if optimizer == "sgd-momentum" else {}
                    opt = cls(params, lr=HYPER["lr"], fused=True, **extra)

                    def torch_fused(opt=opt):
                        opt.step()
                        torch.cuda.synchronize()

                    steps["torch fused (GPU)"] = torch_fused
            times = _repeat_times(steps, repeats, 1)
            medians = {label: statistics.median(values) for label, values in times.items()}
            limit = medians["device copy bandwidth"]
            for label, seconds in medians.items():
                rows.append(
                    {
                        "regime": regime,
                        "optimizer": optimizer,
                        "implementation": label,
                        "elements": elements,
                        "ms": seconds * 1e3,
                        "GB/s": bytes_per_element(optimizer) * elements / seconds / 1e9,
                        "percent_of_memory_limit": 100 * limit / seconds,
                        "spread": max(times[label]) / min(times[label]),
                        "repeats_s": times[label],
                    }
                )
            del steps, buffer, arrays
            gc.collect()
    return rows


def machine_info() -> dict:
    import numba

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "mxopt_threads": importlib.import_module("mxopt.kernels.threads").pool().threads,
        "mxopt_parallel_min_size": importlib.import_module("mxopt.kernels.cpu").parallel_min_size(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "mxopt": mxopt.__version__,
    }
    for name in ("torch", "jax", "optax", "thinc", "cupy"):
        try:
            module = __import__(name)
            info[name] = module.__version__
            if name == "torch":
                info["torch_threads"] = module.get_num_threads()
        except Exception:
            info[name] = None
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def _load() -> float | None:
    """The 1-minute load average (runnable processes), where the system reports it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def cpu_seconds() -> tuple[float, float] | None:
    """``(busy seconds of all the machine's CPUs, those of this process and its finished
    children)`` so far, where Linux reports the first (``/proc/stat``; time stolen by the
    hypervisor counts as busy: it is other machines' work on these cores)."""
    try:
        import resource

        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
        ticks = os.sysconf("SC_CLK_TCK")
    except (ImportError, OSError, ValueError):
        return None
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usage)
    return (user + nice + system + irq + softirq + steal) / ticks, own


def others_share(start, end, wall: float, cpus: int) -> float | None:
    """The share of the machine's CPU time between two :func:`cpu_seconds` readings,
    ``wall`` seconds apart, that other processes took (the run's own threads and
    processes left out: a load average after the run counts them too)."""
    if start is None or end is None or wall <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others) / (wall * cpus)


def run_suite(regimes, optimizers, repeats: int) -> list:
    rows = []
    for regime in regimes:
        if regime not in REGIMES:  # the distributed regime: run_distributed
            continue
        for optimizer in optimizers:
            print(f"  {regime:12s} {optimizer:12s} ...", file=sys.stderr, flush=True)
            rows += run_regime(regime, optimizer, repeats)
    return rows


def _default_buildable(cls) -> bool:
    try:
        cls()
    except TypeError:  # a wrapper (Lookahead) needs the optimizer it wraps
        return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mxopt bench",
        description="Time one optimizer step: mxopt against the memory limit, NumPy, torch, "
        "optax and Thinc (when installed). Prints markdown tables; writes JSON and a PNG.",
    )
    parser.add_argument(
        "--regimes", nargs="+", default=None, choices=[*REGIMES, DISTRIBUTED],
        help=f"default: all ({', '.join([*REGIMES, DISTRIBUTED])}); with --quick: "
        f"{', '.join(QUICK)}",
    )  # fmt: skip
    parser.add_argument(
        "--optimizers", nargs="+", default=list(PEERED),
        choices=[*PEERED, *(n for n, c in mxopt.OPTIMIZERS.items() if _default_buildable(c))],
        help="sgd-momentum, adam and adamw are compared with their peers; any other name of "
        "mxopt.OPTIMIZERS is timed with its default options",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per figure")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{', '.join(QUICK)} only (the distributed regime with small shapes)",
    )  # fmt: skip
    parser.add_argument(
        "--ranks", nargs="+", type=int, default=list(distributed.RANKS),
        help="ranks of the distributed regime's jobs (default 1 2 4; 1 is always run: the "
        "baseline of its ratios)",
    )  # fmt: skip
    parser.add_argument("--out", default="benchmark-results", help="folder for JSON, MD, PNG")
    parser.add_argument("--no-startup", action="store_true", help="skip start-up figures")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if any(n < 1 for n in args.ranks):
        parser.error("--ranks must be at least 1")
    regimes = args.regimes or (QUICK if args.quick else [*REGIMES, DISTRIBUTED])
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    load_before, cpu_before, started = _load(), cpu_seconds(), time.perf_counter()
    rows = run_suite(regimes, args.optimizers, args.repeats)
    spread = None
    if DISTRIBUTED in regimes:
        spread = distributed.run_distributed(args.optimizers, args.repeats, args.quick, args.ranks)
    gpu = gpu_rows(regimes, args.optimizers, args.repeats)
    extra = {} if args.no_startup else startup_figures()
    memory = peak_extra_memory()
    cpus = os.cpu_count() or 1
    others = others_share(cpu_before, cpu_seconds(), time.perf_counter() - started, cpus)
    data = {
        "machine": info,
        "load": {"before": load_before, "after": _load(), "others": others, "cpus": cpus},
        "repeats": args.repeats,
        "rows": rows,
        "gpu": gpu,
        "startup": extra,
        "peak_extra_memory_bytes": memory,
        "distributed": spread,
    }
    text = report(data) + distributed.distributed_report(spread)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    why_not = (
        chart(rows, os.path.join(args.out, "bench.png"))
        if rows
        else "no PNG: no regime of one process"
    )
    if why_not is None:
        print(f"wrote {args.out}/bench.json, bench.md and bench.png")
    else:
        print(f"wrote {args.out}/bench.json and bench.md ({why_not})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
