"""The package as users meet it: light import, complete exports, documented names."""

import inspect
import subprocess
import sys

import mxopt


def test_import_is_light():
    code = (
        "import sys, time; t = time.perf_counter(); import mxopt; "
        "print(time.perf_counter() - t); "
        "assert 'numba' not in sys.modules, 'numba imported'; "
        "assert 'cupy' not in sys.modules, 'cupy imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_public_names_exist_and_are_documented():
    for name in mxopt.__all__:
        obj = getattr(mxopt, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
    for namespace in (mxopt.LearningRate, mxopt.Momentum):
        for name in namespace.__all__:
            assert getattr(namespace, name).__doc__, f"{namespace.__name__}.{name}"


def test_signatures_show_the_options():
    sgd = "lr momentum nesterov dampening lazy_update cautious state_dtype grad_clip weight_decay"
    sgd += " grad_scale"
    sgd += " maximize lr_scheduler momentum_scheduler multi_precision stochastic_rounding"
    sgd += " rounding_seed state"
    assert list(inspect.signature(mxopt.SGD).parameters) == sgd.split()
    adam = "lr beta1 beta2 epsilon amsgrad epsilon_hat cautious lazy_update state_dtype grad_clip"
    adam += " weight_decay decoupled_weight_decay grad_scale maximize lr_scheduler"
    adam += " multi_precision stochastic_rounding rounding_seed state"
    params = inspect.signature(mxopt.ADAM).parameters
    assert list(params) == adam.split()
    assert params["weight_decay"].default == 1e-5
    assert inspect.signature(mxopt.SGD).parameters["weight_decay"].default == 1e-4


def test_version():
    result = subprocess.run(
        [sys.executable, "-m", "mxopt", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"mxopt {mxopt.__version__}"
