"""The built-in demo learns, and its command line works."""

import os
import pathlib
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from mxopt.__main__ import main
from mxopt.cli.demo import DEMO_OPTIMIZERS, MLP, spirals, train


def test_backward_pass_matches_finite_differences():
    x, y = spirals(points_per_class=5, seed=3)
    small = MLP.create(2, 6, 3, seed=3)
    model = MLP(*(p.astype(np.float64) for p in small.parameters().values()))
    x = x.astype(np.float64)
    _, grads = model.loss_and_grads(x, y)
    eps = 1e-6
    for name, param in model.parameters().items():
        flat = param.reshape(-1)
        for j in range(0, flat.size, max(1, flat.size // 5)):
            old = flat[j]
            flat[j] = old + eps
            up, _ = model.loss_and_grads(x, y)
            flat[j] = old - eps
            down, _ = model.loss_and_grads(x, y)
            flat[j] = old
            numeric = (up - down) / (2 * eps) * len(y)  # grads are sums, losses means
            assert grads[name].reshape(-1)[j] == pytest.approx(numeric, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("name", DEMO_OPTIMIZERS)
def test_demo_learns(name):
    history = train(DEMO_OPTIMIZERS[name](), epochs=10)
    assert history[-1].loss < 0.5 * history[0].loss
    assert history[-1].val_accuracy > 0.9


def test_demo_lr_column_follows_the_schedule():
    history = train(DEMO_OPTIMIZERS["adam-exp"](), epochs=3)
    assert [r.lr for r in history] == pytest.approx([0.02 * 0.93**e for e in (1, 2, 3)])


def test_cli_demo_prints_a_table(capsys):
    assert main(["demo", "--epochs", "2", "--optimizer", "sgd-momentum", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "epoch" in out and "summary" in out and "sgd-momentum" in out


def test_cli_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--epochs", "0"])
    assert exited.value.code == 2
    assert "argument --epochs: must be at least 1, got 0" in capsys.readouterr().err


# -- the distributed demo (mxopt demo --distributed) --------------------------------------


def test_distributed_demo_in_a_world_of_one_is_the_single_process_demo():
    from mxopt.cli.demo import train_distributed
    from mxopt.distributed import LocalCollectives

    for name in DEMO_OPTIMIZERS:
        alone = train(DEMO_OPTIMIZERS[name](), epochs=3)
        sharded = train_distributed(DEMO_OPTIMIZERS[name](), epochs=3, comm=LocalCollectives())
        assert sharded == alone  # the same bits: one rank sums nothing and packs the model


def test_cli_distributed_demo_without_mpiexec_is_a_world_of_one(capsys):
    # with mpi4py installed this is MPI's singleton world; without it, mxopt's world of one
    argv = ["demo", "--distributed", "--epochs", "2", "--optimizer", "sgd-momentum",
            "--no-plot", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data-parallel on 1 rank(s) (ShardedUpdater, reduce='ordered')" in out
    assert out.count("summary:") == 1 and "1 rank(s))" in out


@pytest.mark.parametrize("error", [ImportError, RuntimeError])
def test_distributed_demo_without_mpi_is_mxopts_world_of_one(monkeypatch, capsys, error):
    # ImportError: no mpi4py; RuntimeError: mpi4py without an MPI library to load
    import builtins

    from mxopt.cli.demo import world
    from mxopt.distributed import LocalCollectives

    real_import = builtins.__import__

    def without_mpi(name, *args, **kwargs):
        if name.split(".")[0] == "mpi4py":
            raise error("cannot load MPI library")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_mpi)
    comm, rank, size = world()
    assert isinstance(comm, LocalCollectives) and (rank, size) == (0, 1)
    argv = ["demo", "--distributed", "sum", "--epochs", "1", "--optimizer", "adam-exp",
            "--no-plot", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "data-parallel on 1 rank(s) (ShardedUpdater, reduce='sum')" in capsys.readouterr().out


_ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\S+\s*$")


def _run_under_mpiexec(ranks: int, args: list, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python -m mpi4py ARGS`` in a process group of its own, every rank
    of it killed if it runs past ``timeout``; one kernel thread per rank."""
    import importlib.util

    from mxopt.cli.bench_distributed import find_mpiexec

    mpiexec = find_mpiexec()
    if importlib.util.find_spec("mpi4py") is None or mpiexec is None:
        pytest.skip('needs mpi4py and mpiexec: pip install "mxopt[mpi]"')
    root = pathlib.Path(__file__).resolve().parent.parent
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, NUMBA_NUM_THREADS="1", MXOPT_NUM_THREADS="1", PYTHONPATH=path)
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} ran past {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize(
    "reduce",
    ["ordered", "sum"],
)
def test_distributed_demo_on_two_ranks_learns_as_one_process(reduce):
    names = ["sgd-momentum", "adam-exp"]
    result = _run_under_mpiexec(2, ["-m", "mxopt", "demo", "--distributed", reduce,
                                    "--epochs", "3", "--optimizer", *names, "--no-plot",
                                    "--no-progress"])  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"data-parallel on 2 rank(s) (ShardedUpdater, reduce={reduce!r})" in out
    assert out.count("summary:") == 1  # rank 0 prints, rank 1 does not
    rows = [_ROW.match(line) for line in out.splitlines()]
    rows = [tuple(float(v) for v in m.groups()) for m in rows if m]
    assert len(rows) == 3 * len(names)
    expected = []
    for name in names:  # one process, the whole batch of 32 at once
        expected += [(r.epoch, r.loss, r.train_accuracy, r.val_accuracy)
                     for r in train(DEMO_OPTIMIZERS[name](), epochs=3)]  # fmt: skip
    for (epoch, loss, train_acc, val_acc), (e, lo, tr, va) in zip(rows, expected, strict=True):
        # the ranks' gradients are sums of 16 examples added together, not one sum of 32:
        # the weights differ from one process's in the last bits (~1e-6 relative)
        assert epoch == e
        assert loss == pytest.approx(lo, abs=2e-4)  # printed with 4 decimals
        assert train_acc == pytest.approx(tr, abs=0.006) and val_acc == pytest.approx(va, abs=0.01)


def test_sharded_checkpoint_of_a_world_of_one_continues_bit_for_bit(tmp_path):
    """ShardedUpdater.save and .load (mxopt.distributed.files) in a world of one: the
    loaded updater (the optimizer state and counters) takes the same step as the one
    that went on."""
    import mxopt
    from mxopt.distributed import ShardedUpdater

    def setup():
        model = MLP.create(2, 8, 3, seed=1)
        buffer = mxopt.ParameterBuffer.from_arrays(model.parameters())
        return MLP(**buffer.weights), buffer

    x, y = spirals(points_per_class=8, seed=1)
    state = mxopt.OptimizationState(batch_size=len(y))
    model, buffer = setup()
    updater = ShardedUpdater(mxopt.ADAM(lr=0.01, state=state), buffer)

    def step(model, buffer, updater):
        _, grads = model.loss_and_grads(x, y)
        for name, grad in grads.items():
            buffer.grads[name][...] = grad
        updater.optimizer.state.begin_batch()
        updater.step()

    state.begin_epoch()
    step(model, buffer, updater)
    updater.save(tmp_path / "ckpt")
    model2, buffer2 = setup()
    buffer2.weight[...] = buffer.weight  # the weights are the caller's to save
    loaded = ShardedUpdater.load(tmp_path / "ckpt", buffer2)
    assert loaded.optimizer.state.curr_iter == 1
    step(model, buffer, updater)
    step(model2, buffer2, loaded)
    assert np.array_equal(buffer2.weight, buffer.weight)
