import shutil

import numpy as np
import pytest


def _cupy_or_none():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:
        pass
    return None


CUPY = _cupy_or_none()
BACKENDS = [pytest.param(np, id="numpy")] + [
    pytest.param(CUPY, id="cupy", marks=pytest.mark.gpu)
] * (CUPY is not None)


#: Where a module's GPU tests run (the ``gpu`` fixture): on the emulation (g++ builds the
#: CUDA sources) and, where CuPy finds a device, on the GPU itself (benchmarks/gpu_check.py).
GPUS = [
    pytest.param("emulated", marks=pytest.mark.skipif(shutil.which("g++") is None,
                                                      reason="g++ not on PATH")),
] + [pytest.param("cuda", marks=pytest.mark.gpu)] * (CUPY is not None)  # fmt: skip


@pytest.fixture(params=GPUS)
def gpu(request):
    """The ``cupy`` of a GPU test: the real one, or the fake one, which is the ``cupy``
    fixture of tests/test_gpu_emulated.py (the module must import it)."""
    return CUPY if request.param == "cuda" else request.getfixturevalue("cupy")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device")


def to_numpy(array):
    return array.get() if hasattr(array, "get") else np.asarray(array)


def record_cpu_kernel_calls(monkeypatch, keep=lambda kernel, scalars: True):
    """Record ``(kernel, w, g, state, scalars)`` (copies, before the call) of every CPU
    kernel run of a single array: through ``_cpu.run`` and through the runners that
    updaters keep for their fast path (their direct compiled calls, which read the arrays
    themselves, are turned off)."""
    from mxopt.kernels import cpu as _cpu
    from mxopt.kernels import direct as _direct

    calls = []
    real_run = _cpu.run

    def recording_run(kernel, w, g, state, scalars, check):
        if keep(kernel, scalars):
            calls.append((kernel, w.copy(), g.copy(), tuple(a.copy() for a in state), scalars))
        return real_run(kernel, w, g, state, scalars, check)

    def recording_runner(kernel, dtype, size):
        return lambda w, g, state, scalars, check: recording_run(kernel, w, g, state, scalars,
                                                                 check)  # fmt: skip

    monkeypatch.setattr(_cpu, "run", recording_run)
    monkeypatch.setattr(_cpu, "runner", recording_runner)
    monkeypatch.setattr(_direct, "AVAILABLE", False)
    return calls


# -- the quick subset: python -m pytest -m quick --------------------------------------------
#
# A few fast tests per area, chosen so that together they run every module of mxopt (and
# tests/test_cli.py imports every one): a check in under a minute on two cores. The full
# run (python -m pytest) stays the test of record. A test is named by its function (every
# parametrization) or as "function[-end]" (the parametrizations whose id ends with "-end").
QUICK = {
    "test_adafactor.py": {"test_factored_state_is_one_row_and_one_column_per_matrix"},
    "test_averaging.py": {"test_ema_follows_its_formula"},
    "test_benchmark.py": {"test_report_summarises_the_targets"},
    "test_buffer.py": {
        "test_packed_updates_give_the_bits_of_per_tensor_updates[-default]",
        "test_per_tensor_norms_take_segmented_kernels",
    },
    "test_checkpoint.py": {
        "test_resume_from_a_file_is_bit_identical[-default]",
        "test_loss_scaler_and_policies_are_restored",
    },
    "test_cli.py": {
        "test_version",
        "test_python_dash_m_runs_the_same_command_line",
        "test_every_module_imports",
        "test_optimizer_names_are_case_insensitive",
        "test_demo_header_shows_the_values_in_effect",
        "test_help_examples_keep_their_lines",
        "test_readme_config_example_runs_without_confection",
        "test_plot_schedule",
        "test_bench_options_reach_the_suite",
        "test_bench_distributed_report_says_when_ranks_share_cores",
        "test_bench_numpy_peer_steps_like_mxopt",
    },
    "test_demo.py": {
        "test_backward_pass_matches_finite_differences",
        "test_sharded_checkpoint_of_a_world_of_one_continues_bit_for_bit",
    },
    "test_distributed_nccl.py": {"test_the_mpi_constructor_broadcasts_rank_0s_unique_id"},
    "test_distributed.py": {"test_a_world_of_one_is_update_buffer[-plain]"},
    "test_gpu_emulated.py": {"test_kernels_are_compiled_once_per_device_with_nvrtc_options"},
    "test_groups.py": {"test_lr_mult_scales_the_learning_rate_exactly"},
    "test_list_path.py": {"test_per_index_learning_rate_multipliers_take_their_own_scalars"},
    "test_optimizers.py": {"test_matches_oracle_after_every_step[-plain-f32-2d-numpy]"},
    "test_ranger.py": {"test_equals_the_explicit_lookahead_radam"},
    "test_registry.py": {
        "test_unknown_optimizer_suggests_the_full_registered_name",
        "test_unknown_optimizer_lists_close_matches",
    },
    "test_robustness.py": {"test_global_norm_matches_numpy_in_float64"},
    "test_schedule_compose.py": {"test_warmup_is_a_join_with_a_line"},
    "test_schedule_momentum.py": {"test_sgd_reads_a_momentum_schedule_at_every_update"},
    "test_schedule_plot.py": {"test_schedule_values_counts_like_a_training_loop"},
    "test_schedulers.py": {"test_exp_on_epoch_and_on_iteration"},
    "test_state.py": {"test_counts_like_a_training_loop"},
    "test_thinc.py": {"test_single_updates_match_thinc"},
    "test_threads.py": {"test_every_chunk_runs_exactly_once_across_threads"},
    "test_updater.py": {"test_normalized_gradient_by_hand"},
    "test_low_precision.py": {
        "test_stochastic_rounding_makes_progress_where_nearest_bfloat16_stalls"
    },
    "test_state_dtype.py": {"test_memory_per_parameter"},
    "test_quantization.py": {"test_nearest_code_on_random_values"},
    "test_accumulation.py": {"test_schedules_read_optimizer_steps"},
}


def _only_quick(config) -> bool:
    return (config.option.markexpr or "").strip() == "quick"


def pytest_ignore_collect(collection_path, config):
    # `-m quick` alone: skip collecting the other files (importing torch and jax for
    # their tests alone takes half a minute)
    if _only_quick(config) and collection_path.suffix == ".py":
        name = collection_path.name
        return name.startswith("test_") and name not in QUICK
    return None


def _chosen(item, names) -> bool:
    function = getattr(item, "originalname", item.name)
    for name in names:
        chosen, _, part = name.partition("[")
        if chosen == function and (not part or part in item.name[len(function) :]):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    used = set()
    for item in items:
        names = QUICK.get(item.path.name, ())
        for name in names:
            if _chosen(item, (name,)):
                used.add((item.path.name, name))
        if _chosen(item, names) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.quick)
    stale = [f"{f}::{n}" for f, names in QUICK.items() for n in names if (f, n) not in used]
    if _only_quick(config) and stale:  # a renamed test would leave the subset silently
        raise pytest.UsageError(f"tests/conftest.py QUICK names no test: {', '.join(stale)}")
