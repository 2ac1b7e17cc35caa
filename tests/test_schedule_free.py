"""Schedule-Free's evaluation point through the updater's averaging API (the generic tests
check the steps themselves against tests/reference/schedule_free.py)."""

import types

import numpy as np
import pytest

import mxopt
from tests.reference import schedule_free as oracle


def _run(optimizer, steps=6, averaging=None):
    state = mxopt.OptimizationState(batch_size=1)
    optimizer.state = state
    updater = mxopt.get_updater(optimizer, averaging=averaging)
    rng = np.random.default_rng(0)
    w = rng.normal(size=7)
    reference_w, reference = w.copy(), oracle.init(w.shape, types.SimpleNamespace(options={}))
    state.begin_epoch()
    for k in range(1, steps + 1):
        g = rng.normal(size=7)
        state.begin_batch()
        updater("w", g, w)
        x = types.SimpleNamespace(
            lr=0.1, momentum=0.9, weight_decay=0.0, warmup_steps=2, r=0.0, weight_lr_power=2.0,
            grad_scale=1.0, batch_size=1, grad_clip=0.0, maximize=False, k=k, options={},
        )  # fmt: skip
        oracle.step(reference_w, g, reference, x)
    return updater, w, reference_w, reference


def test_averaged_weights_are_x_and_the_swap_back_is_exact():
    updater, w, reference_w, reference = _run(mxopt.ScheduleFreeSGD(lr=0.1, warmup_steps=2))
    np.testing.assert_allclose(w, reference_w, rtol=1e-12)
    y = w.copy()
    with updater.averaged({"w": w}):
        np.testing.assert_allclose(w, reference["x"], rtol=1e-12)
        assert not np.array_equal(w, y)
    np.testing.assert_array_equal(w, y)
    np.testing.assert_array_equal(updater.averages["w"], updater.states["w"].arrays["x"])
    # y is the interpolation of x and z
    z = updater.states["w"].arrays["z"]
    np.testing.assert_allclose(y, 0.9 * updater.averages["w"] + 0.1 * z, rtol=1e-12)


def test_an_averaging_of_the_updater_replaces_x_in_the_api():
    updater, w, _, _ = _run(mxopt.ScheduleFreeSGD(lr=0.1, warmup_steps=2), averaging=mxopt.EMA())
    assert updater.average_name == "average"
    assert set(updater.states["w"].arrays) == {"z", "x", "average"}
    np.testing.assert_array_equal(updater.averages["w"], updater.states["w"].arrays["average"])


def test_an_optimizer_without_an_evaluation_point_has_no_averages():
    updater, _, _, _ = _run(mxopt.SGD(lr=0.1))
    assert updater.averages == {}
    with pytest.raises(ValueError, match="SGD has no evaluation point of its own"):
        updater.swap_averages({})


@pytest.mark.parametrize("cls", [mxopt.ScheduleFreeSGD, mxopt.ScheduleFreeAdamW])
def test_bad_options_are_refused_by_name(cls):
    name = "momentum" if cls is mxopt.ScheduleFreeSGD else "beta1"
    with pytest.raises(ValueError, match=name):
        cls(**{name: 0.0})  # y would be z: no averaging left
    with pytest.raises((TypeError, ValueError), match="warmup_steps"):
        cls(warmup_steps=-1)
    with pytest.raises(ValueError, match="weight_lr_power"):
        cls(weight_lr_power=-1.0)


def test_a_checkpoint_keeps_the_averaging_sums(tmp_path):
    updater, w, _, _ = _run(mxopt.ScheduleFreeAdamW(lr=0.01, warmup_steps=3), steps=2)
    memory = dict(updater.states["w"].memory)
    assert memory["weight_sum"] > 0 and memory["lr_max"] == pytest.approx(0.01 * 2 / 3)
    updater.save(tmp_path / "sf.ckpt")
    loaded = mxopt.load_updater(tmp_path / "sf.ckpt")
    assert loaded.states["w"].memory == memory
