"""The benchmark suite's distributed regime: :class:`~mxopt.distributed.ShardedUpdater` on
1, 2 and 4 ranks of an MPI job, over the tensor shapes of a BERT-base encoder.

``python -m mxopt bench --regimes distributed`` (part of every full run, and of ``--quick``
with small shapes) launches, for each number of ranks ``N``, one job::

    mpiexec -n N python -m mpi4py -m mxopt.cli.bench_distributed --worker ...

in which every rank holds the whole model in a :class:`~mxopt.ParameterBuffer`, writes
random gradients into it and times ``updater.step()`` (reduce-scatter of the gradients,
the statistics, the update of its share, all-gather of the weights) with ``reduce="sum"``
and ``reduce="ordered"`` alternating inside every repeat. The collectives are wrapped to
time every call and to count the bytes of the arrays handed to them. Each job reports:

* the step time (each repeat: the slowest rank), and its split between communication
  (time inside the collectives, waiting for the other ranks included) and the rest
  (statistics and the update of the share);
* the bytes handed to the collectives per step, against the expectation for a sharded
  step: reduce-scatter and all-gather of the whole buffer, 2 x parameters x 4 bytes in
  float32 (the statistics add a few kB);
* the optimizer-state bytes each rank holds (1/N of the model's, as far as the tensor
  boundaries allow).

Times and state are also given as ratios against the 1-rank job of the same invocation.
Each rank runs ``cpus // N`` kernel threads (at least 1): with more ranks than CPUs the
ranks share cores, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from mxopt.distributed import Collectives

__all__ = [
    "CountingCollectives",
    "bert_like_shapes",
    "distributed_report",
    "find_mpiexec",
    "run_distributed",
]

#: Ranks of a full run, and of ``--quick`` (small shapes).
RANKS = (1, 2, 4)
REDUCTIONS = ("sum", "ordered")
#: Seconds one job may take before it is killed (its whole process group).
JOB_TIMEOUT_S = 900
#: Set for jobs with more ranks than CPUs (unless already set): MPICH's waiting ranks then
#: sleep now and then instead of spinning on the cores the working ranks need (on 2 cores,
#: 4 ranks of the small shapes: 68 ms a step without it, 21 ms with it).
OVERSUBSCRIBED_ENV = {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1"}


def bert_like_shapes(vocabulary=1000, positions=128, hidden=64, intermediate=256, layers=2):
    """The tensor shapes of a BERT encoder of the given sizes (BERT-base, the benchmarks'
    :func:`mxopt.cli.bench.bert_base_shapes`, is 30522, 512, 768, 3072, 12)."""
    shapes = [(vocabulary, hidden), (positions, hidden), (2, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        for _ in range(4):  # query, key, value, attention output
            shapes += [(hidden, hidden), (hidden,)]
        shapes += [(hidden,), (hidden,)]  # attention LayerNorm
        shapes += [(hidden, intermediate), (intermediate,), (intermediate, hidden), (hidden,)]
        shapes += [(hidden,), (hidden,)]  # output LayerNorm
    shapes += [(hidden, hidden), (hidden,)]  # pooler
    return shapes


def _shapes(name: str) -> list:
    if name == "bert-base":
        return bert_like_shapes(30522, 512, 768, 3072, 12)
    return bert_like_shapes()


# -- the worker: one rank of a job ---------------------------------------------------------


class CountingCollectives(Collectives):
    """Another :class:`~mxopt.distributed.Collectives`, timing every call and counting the
    bytes of the arrays handed to it (nothing moves in a world of one: 0 bytes there).

    ``reduce_scatter`` and ``all_gather`` count the whole flat array they are handed
    (every rank hands its whole gradient, and receives the whole weight);
    ``all_gather_values`` the gathered float64 values; ``broadcast`` the array."""

    def __init__(self, inner: Collectives):
        self.inner = inner
        self.rank, self.size = inner.rank, inner.size
        self.reset()

    def reset(self) -> None:
        self.seconds = 0.0
        self.bytes = {"reduce_scatter": 0, "all_gather": 0, "all_gather_values": 0,
                      "broadcast": 0}  # fmt: skip

    def _timed(self, what: str, nbytes: int, call):
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.seconds += time.perf_counter() - started
            if self.size > 1:
                self.bytes[what] += int(nbytes)

    def reduce_scatter(self, full, share, offsets, ordered: bool) -> None:
        self._timed("reduce_scatter", full.nbytes,
                    lambda: self.inner.reduce_scatter(full, share, offsets, ordered))  # fmt: skip

    def all_gather(self, full, offsets) -> None:
        self._timed("all_gather", full.nbytes, lambda: self.inner.all_gather(full, offsets))

    def broadcast(self, array, root: int = 0) -> None:
        self._timed("broadcast", array.nbytes, lambda: self.inner.broadcast(array, root))

    def all_gather_values(self, values, counts):
        return self._timed("all_gather_values", 8 * sum(int(c) for c in counts),
                           lambda: self.inner.all_gather_values(values, counts))  # fmt: skip


def _state_bytes(updater) -> int:
    """Bytes of the optimizer-state arrays this rank holds (views of flat buffers: each
    element counted once)."""
    return sum(
        int(a.nbytes)
        for state in updater.states.values()
        for a in state.arrays.values()
        if hasattr(a, "nbytes")
    )


def _step(updater, counter) -> tuple:
    """``(seconds, seconds in the collectives, {collective: bytes})`` of one step."""
    counter.reset()
    updater.optimizer.state.begin_batch()
    started = time.perf_counter()
    updater.step()
    return time.perf_counter() - started, counter.seconds, dict(counter.bytes)


def worker(shapes_name: str, optimizers: list, repeats: int, out: str) -> None:
    """One rank of a benchmark job (under mpiexec); rank 0 writes the job's JSON."""
    from mpi4py import MPI

    import mxopt
    from mxopt.cli.bench_peers import mxopt_optimizer as _mxopt_optimizer
    from mxopt.distributed import ShardedUpdater, collectives_for
    from mxopt.kernels import threads

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shapes = _shapes(shapes_name)
    buffer = mxopt.ParameterBuffer(dict(enumerate(shapes)))
    rng = np.random.default_rng(rank)  # each rank its own gradients, the same weights
    buffer.weight[...] = np.random.default_rng(1234).standard_normal(buffer.weight.size,
                                                                     dtype=np.float32)  # fmt: skip
    buffer.grad[...] = rng.standard_normal(buffer.grad.size, dtype=np.float32)
    elements = int(buffer.weight.size)
    results = {}
    for name in optimizers:
        updaters, counters, errors = {}, {}, {}
        for reduce in REDUCTIONS:
            state = mxopt.OptimizationState(batch_size=size)
            state.begin_epoch()
            counters[reduce] = CountingCollectives(collectives_for(comm, "numpy"))
            updaters[reduce] = ShardedUpdater(_mxopt_optimizer(name, state), buffer,
                                              counters[reduce], reduce=reduce)  # fmt: skip
            updaters[reduce].broadcast_weights()

        for reduce in REDUCTIONS:  # warm-up: compile, create the state, fault pages in
            try:
                for _ in range(2):
                    _step(updaters[reduce], counters[reduce])
            except Exception as error:  # raised on every rank alike (ShardedUpdater agrees)
                errors[reduce] = f"{type(error).__name__}: {error}"
        timed = [r for r in REDUCTIONS if r not in errors]
        samples = {r: [] for r in timed}
        for _ in range(repeats):
            for reduce in timed:  # alternate: noise hits both alike
                comm.Barrier()
                samples[reduce].append(_step(updaters[reduce], counters[reduce]))
        for reduce in REDUCTIONS:
            if reduce in errors:
                results[f"{name}/{reduce}"] = {"optimizer": name, "reduce": reduce,
                                               "error": errors[reduce]}  # fmt: skip
                continue
            steps = np.array([s[0] for s in samples[reduce]])
            comms = np.array([s[1] for s in samples[reduce]])
            everyone = comm.allgather((steps, comms, _state_bytes(updaters[reduce])))
            all_steps = np.array([e[0] for e in everyone])  # ranks x repeats
            all_comms = np.array([e[1] for e in everyone])
            per_repeat_step = all_steps.max(axis=0)  # the job's step: its slowest rank
            per_repeat_comm = all_comms.mean(axis=0)
            per_repeat_update = (all_steps - all_comms).mean(axis=0)
            checksum = float(np.sum(buffer.weight, dtype=np.float64))
            results[f"{name}/{reduce}"] = {
                "optimizer": name,
                "reduce": reduce,
                "step_ms": 1e3 * float(np.median(per_repeat_step)),
                "communication_ms": 1e3 * float(np.median(per_repeat_comm)),
                "update_ms": 1e3 * float(np.median(per_repeat_update)),
                "spread": float(per_repeat_step.max() / per_repeat_step.min()),
                "bytes_per_step": samples[reduce][-1][2],
                "state_bytes_per_rank": [int(e[2]) for e in everyone],
                "weights_agree": len(set(comm.allgather(checksum))) == 1,
                "repeats_s": per_repeat_step.tolist(),
            }
        del updaters, counters
    if rank == 0:
        with open(out, "w") as f:
            json.dump(
                {
                    "ranks": size,
                    "shapes": shapes_name,
                    "tensors": len(shapes),
                    "elements": elements,
                    "threads_per_rank": threads.pool().threads,
                    "results": results,
                },
                f,
            )


# -- the driver: one job per number of ranks ------------------------------------------------


def find_mpiexec() -> str | None:
    """The ``mpiexec`` beside this Python (pip's MPICH puts it there), else on ``PATH``."""
    here = os.path.dirname(sys.executable)
    return shutil.which("mpiexec", path=here) or shutil.which("mpiexec")


def _mpiexec_flags(mpiexec: str, ranks: int) -> list:
    """Open MPI refuses more ranks than cores, and root, unless told: MPICH needs nothing."""
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" not in version and "OpenRTE" not in version and "PRRTE" not in version:
        return []
    flags = ["--oversubscribe"] if ranks > (os.cpu_count() or 1) else []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return flags


def why_not_available() -> str | None:
    """Why the distributed regime cannot run here (``None`` when it can)."""
    try:
        from mpi4py import MPI  # noqa: F401
    except (ImportError, RuntimeError) as error:
        return f'needs mpi4py and an MPI (pip install "mxopt[mpi]"): {error}'
    if find_mpiexec() is None:
        return 'needs mpiexec (pip install "mxopt[mpi]" brings MPICH\'s)'
    return None


def _run_job(mpiexec: str, ranks: int, shapes: str, optimizers, repeats: int) -> dict:
    import mxopt

    cpus = os.cpu_count() or 1
    per_rank = str(max(1, cpus // ranks))
    root = os.path.dirname(os.path.dirname(os.path.abspath(mxopt.__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, MXOPT_NUM_THREADS=per_rank, NUMBA_NUM_THREADS=per_rank,
               PYTHONPATH=path)  # fmt: skip
    if ranks > cpus:
        env = OVERSUBSCRIBED_ENV | env
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "job.json")
        command = [
            mpiexec, *_mpiexec_flags(mpiexec, ranks), "-n", str(ranks),
            sys.executable, "-m", "mpi4py", "-m", "mxopt.cli.bench_distributed", "--worker",
            "--shapes", shapes, "--optimizers", *optimizers, "--repeats", str(repeats),
            "--out", out,
        ]  # fmt: skip
        # a group of its own, so that a job past its time is killed whole (every rank)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)  # fmt: skip
        try:
            output, _ = process.communicate(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(f"the {ranks}-rank job ran past {JOB_TIMEOUT_S} s") from None
        if process.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise RuntimeError(f"the {ranks}-rank job failed (exit {process.returncode}):\n{tail}")
        with open(out) as f:
            return json.load(f)


def run_distributed(optimizers, repeats: int, quick: bool = False, ranks=RANKS) -> dict:
    """Every job of the regime, and the ratios against the 1-rank job (``data["distributed"]``
    of ``bench.json``); ``{"skipped": why}`` when MPI is missing."""
    why = why_not_available()
    if why is not None:
        return {"skipped": why}
    ranks = sorted(set(ranks) | {1})  # the baseline of the ratios
    shapes = "bert-like-small" if quick else "bert-base"
    mpiexec = find_mpiexec()
    cpus = os.cpu_count() or 1
    jobs = []
    for n in ranks:
        print(f"  distributed  {n} rank(s), {shapes} ...", file=sys.stderr, flush=True)
        jobs.append(_run_job(mpiexec, n, shapes, list(optimizers), repeats))
    rows = []
    base = jobs[0]["results"]
    for job in jobs:
        n, elements = job["ranks"], job["elements"]
        expected = 2 * elements * 4 if n > 1 else 0
        for key, r in job["results"].items():
            row = {"ranks": n, "threads_per_rank": job["threads_per_rank"],
                   "oversubscribed": n > cpus, **r}  # fmt: skip
            one = base.get(key)
            if "error" not in r and one is not None and "error" not in one:
                communicated = sum(r["bytes_per_step"].values())
                state = max(r["state_bytes_per_rank"])
                row |= {
                    "communicated_bytes": communicated,
                    "expected_bytes": expected,
                    "communicated_vs_expected": communicated / expected if expected else None,
                    "state_bytes_max_rank": state,
                    "state_vs_1_rank": state / max(one["state_bytes_per_rank"]),
                    "step_vs_1_rank": r["step_ms"] / one["step_ms"],
                }
            rows.append(row)
    return {
        "shapes": shapes,
        "tensors": jobs[0]["tensors"],
        "elements": jobs[0]["elements"],
        "cpus": cpus,
        "mpiexec": mpiexec,
        "repeats": repeats,
        "rows": rows,
    }


def distributed_report(data: dict | None) -> str:
    """The Markdown section of the distributed regime (empty when it did not run)."""
    if not data:
        return ""
    if "skipped" in data:
        return f"\n### Distributed (ShardedUpdater)\n\nskipped: {data['skipped']}\n"
    mb = 1e6
    lines = [
        f"\n### Distributed (ShardedUpdater, {data['shapes']}: {data['tensors']} tensors, "
        f"{data['elements']:,} float32 elements)\n",
        "One `updater.step()` per repeat (medians of the slowest rank's time); communication "
        "is the time inside the collectives (waiting for the other ranks included), update "
        "the rest (statistics and the update of the rank's share). Communicated: the bytes "
        "of the arrays handed to the collectives per step, against 2 x parameters x 4 bytes "
        "(reduce-scatter of the gradients + all-gather of the weights). State: the largest "
        "rank's optimizer state. Ratios against the 1-rank job of this run.\n",
        "| optimizer | reduce | ranks | step ms | step / 1 rank | communication ms "
        "| update ms | communication share | communicated MB | expected MB "
        "| communicated / expected | state MB per rank | state / 1 rank (ideal 1/N) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(data["rows"], key=lambda r: (r["optimizer"], r["reduce"], r["ranks"])):
        ranks = f"{r['ranks']}{'*' if r['oversubscribed'] else ''}"
        if "error" in r:
            lines.append(f"| {r['optimizer']} | {r['reduce']} | {ranks} | failed: "
                         f"{' '.join(r['error'].split())[:120]} |||||||||")  # fmt: skip
            continue
        if "step_vs_1_rank" not in r:
            continue
        ratio = r["communicated_vs_expected"]
        noisy = "~" if r.get("spread", 1.0) > 1.3 else ""
        lines.append(
            f"| {r['optimizer']} | {r['reduce']} | {ranks} | {r['step_ms']:.2f}{noisy} | "
            f"{r['step_vs_1_rank']:.2f} | {r['communication_ms']:.2f} | {r['update_ms']:.2f} | "
            f"{r['communication_ms'] / r['step_ms']:.0%} | {r['communicated_bytes'] / mb:.1f} | "
            f"{r['expected_bytes'] / mb:.1f} | {'' if ratio is None else f'{ratio:.4f}'} | "
            f"{r['state_bytes_max_rank'] / mb:.1f} | {r['state_vs_1_rank']:.3f} "
            f"(1/{r['ranks']} = {1 / r['ranks']:.3f}) |"
        )
    over = sorted({r["ranks"] for r in data["rows"] if r["oversubscribed"]})
    if over:
        lines.append(
            f"\n\\* {', '.join(map(str, over))} ranks on {data['cpus']} CPUs: oversubscribed "
            f"(more ranks than cores, one kernel thread each; MPICH's progress throttled, "
            f"{' '.join(f'{k}={v}' for k, v in OVERSUBSCRIBED_ENV.items())}, so that waiting "
            f"ranks do not spin on the cores); those times measure the ranks sharing cores, "
            f"not how the step scales."
        )
    bad = [r for r in data["rows"] if r.get("weights_agree") is False]
    if bad:
        which = ", ".join(f"{r['optimizer']}/{r['reduce']}/{r['ranks']}" for r in bad)
        lines.append(f"\n**The ranks' weights differed after the run**: {which}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxopt.cli.bench_distributed",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--worker", action="store_true", help="run as one rank of a job")
    parser.add_argument("--shapes", default="bert-base", choices=["bert-base", "bert-like-small"])
    parser.add_argument("--optimizers", nargs="+", default=["adam"])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--ranks", type=int, nargs="+", default=list(RANKS))
    parser.add_argument("--out", help="the worker's JSON (rank 0 writes it)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.shapes, args.optimizers, args.repeats, args.out)
        return 0
    data = run_distributed(args.optimizers, args.repeats, args.shapes != "bert-base", args.ranks)
    print(distributed_report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
