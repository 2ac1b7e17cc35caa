"""The built-in demo learns, and its command line works."""

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
