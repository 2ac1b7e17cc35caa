"""The ``mxopt`` command line: each command runs, and errors are one clear line."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

import mxopt
from mxopt.__main__ import main
from mxopt.cli.main import build_parser

ONE_CYCLE_TOML = textwrap.dedent(
    """\
    [schedule]
    "@schedules" = "mxopt.LearningRate.OneCycle.v1"
    max_lr = 0.1
    total_steps = 1000
    """
)

ADAM_CFG = textwrap.dedent(
    """\
    [optimizer]
    @optimizers = "mxopt.ADAM.v1"
    lr = 0.03

    [optimizer.lr_scheduler]
    @schedules = "mxopt.LearningRate.Exp.v1"
    lr = 0.03
    gamma = 0.9
    """
)


@pytest.fixture(autouse=True)
def _in_a_temporary_folder(tmp_path, monkeypatch):
    """``mxopt demo`` writes demo.png into the current folder by default."""
    monkeypatch.chdir(tmp_path)


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _summary_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(name))


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"mxopt {mxopt.__version__}"


def test_demo_with_a_named_optimizer_and_schedule(capsys):
    code = main(
        ["demo", "--optimizer", "RAdam", "--schedule", "one-cycle", "--epochs", "3",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "== RAdam: RAdam at the first update: lr=" in out
    assert "OneCycle" in out
    # three epoch rows, numbered 1..3
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    # the run learns: the loss of the last epoch is below that of the first
    assert float(rows[-1][1]) < float(rows[0][1])
    assert "RAdam" in _summary_line(out.split("summary")[1], "RAdam")


def test_demo_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "adam.cfg"
    config.write_text(ADAM_CFG)
    assert main(["demo", "--config", str(config), "--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ADAM at the first update: lr=0.027," in out and "lr schedule Exp(" in out
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    # the lr column is the Exp schedule at the end of each epoch: 0.03 * 0.9**epoch
    assert [float(r[4]) for r in rows] == pytest.approx([0.03 * 0.9, 0.03 * 0.81], rel=1e-3)


def test_demo_config_that_is_not_an_optimizer_is_one_line_error(tmp_path, capsys):
    config = tmp_path / "schedule.toml"
    config.write_text(ONE_CYCLE_TOML)
    assert main(["demo", "--config", str(config), "--epochs", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mxopt: error: ") and err.count("\n") == 1
    assert "not an optimizer" in err


def test_demo_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    picture = tmp_path / "demo.png"
    code = main(["demo", "--optimizer", "SGD", "--epochs", "2", "--no-progress",
                 "--plot", str(picture)])  # fmt: skip
    assert code == 0
    assert _png(picture)
    assert f"wrote {picture}" in capsys.readouterr().out


@pytest.mark.parametrize("name, text", [("one_cycle.toml", ONE_CYCLE_TOML), ("adam.cfg", ADAM_CFG)])
def test_plot_schedule(tmp_path, capsys, name, text):
    pytest.importorskip("matplotlib")
    config = tmp_path / name
    config.write_text(text)
    picture = tmp_path / "lr.png"
    code = main(["plot-schedule", str(config), "--epochs", "2", "--batches-per-epoch", "5",
                 "--output", str(picture)])  # fmt: skip
    assert code == 0
    assert _png(picture)


def test_plot_schedule_of_an_optimizer_without_schedule(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    config = tmp_path / "sgd.toml"
    config.write_text('[optimizer]\n"@optimizers" = "mxopt.SGD.v1"\nlr = 0.1\n')
    assert main(["plot-schedule", str(config), "--output", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err == f"mxopt: error: {config}: the optimizer has no lr_scheduler to plot\n"
    assert not (tmp_path / "x.png").exists()


def test_missing_config_file_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["demo", "--config", str(missing), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mxopt: error: ") and err.count("\n") == 1
    assert "nope.toml" in err


def test_unknown_optimizer_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--optimizer", "Adamm"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --optimizer: unknown name 'Adamm'; did you mean 'ADAM'" in err


@pytest.mark.parametrize(
    "given, meant",
    [("adam", "ADAM"), ("ADAMW", "AdamW"), ("radam", "RAdam"), ("SGD-Momentum", "sgd-momentum")],
)
def test_optimizer_names_are_case_insensitive(given, meant):
    parser = build_parser()
    assert parser.parse_args(["demo", "--optimizer", given]).optimizer == [meant]


def test_schedule_names_are_case_insensitive_with_suggestions(capsys):
    assert build_parser().parse_args(["demo", "--schedule", "One-Cycle"]).schedule == "one-cycle"
    with pytest.raises(SystemExit):
        main(["demo", "--schedule", "cosin"])
    assert "unknown name 'cosin'; did you mean 'cosine'" in capsys.readouterr().err


def test_a_name_far_from_every_choice_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--optimizer", "xyzzy"])
    assert "unknown name 'xyzzy' (choose from ADAM, " in capsys.readouterr().err


def test_demo_header_shows_the_values_in_effect(capsys):
    assert main(["demo", "--epochs", "1", "--no-progress", "--no-plot"]) == 0
    out = capsys.readouterr().out
    # the ADAM preset runs at its schedule's lr (Exp(0.02, gamma=0.93) at epoch 1), not
    # at the option lr=0.001 that the schedule overrides
    assert "== adam-exp: ADAM at the first update: lr=0.0186, beta1=0.9," in out
    assert "; lr schedule Exp(lr=0.02, gamma=0.93" in out
    assert "lr=0.001" not in out
    assert "The times include compiling the kernels" in out


def test_demo_header_shows_the_momentum_of_the_momentum_scheduler():
    from mxopt.cli.demo import describe

    text = describe(mxopt.SGD(lr=0.1, momentum_scheduler=mxopt.Momentum.Fixed(0.9)))
    assert text.startswith("SGD at the first update: lr=0.1, momentum=0.9,")
    assert text.endswith("; momentum schedule Fixed(momentum=0.9)")
    assert "momentum=0.0" not in text


def test_help_examples_keep_their_lines(capsys):
    with pytest.raises(SystemExit):
        main(["plot-schedule", "--help"])
    out = capsys.readouterr().out
    assert '\n  [schedule]\n  "@schedules" = "mxopt.LearningRate.OneCycle.v1"\n' in out
    assert "\n  max_lr = 0.1\n  total_steps = 1000\n" in out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "\n  mxopt demo --config my-optimizer.toml\n" in capsys.readouterr().out


def test_readme_config_example_runs_without_confection(tmp_path, monkeypatch, capsys):
    """The README's `mxopt demo --config my-optimizer.toml` and its file work on the base
    install, which has no confection."""
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    assert "mxopt demo --config my-optimizer.toml" in readme
    toml = readme.split("`my-optimizer.toml`:\n\n```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my-optimizer.toml").write_text(toml)
    monkeypatch.setitem(sys.modules, "confection", None)  # import confection fails
    args = ["demo", "--config", "my-optimizer.toml", "--epochs", "1", "--no-progress"]
    assert main([*args, "--no-plot"]) == 0
    assert "ADAM at the first update: lr=0.03," in capsys.readouterr().out


def test_demo_writes_its_picture_by_default(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--optimizer", "SGD", "--epochs", "1", "--no-progress"]) == 0
    assert _png(tmp_path / "demo.png")
    assert "wrote demo.png" in capsys.readouterr().out


def test_demo_no_plot_writes_no_picture(tmp_path):
    assert main(["demo", "--optimizer", "SGD", "--epochs", "1", "--no-progress", "--no-plot"]) == 0
    assert not (tmp_path / "demo.png").exists()


def test_demo_without_matplotlib_trains_and_says_how_to_get_the_picture(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib now fails
        "from mxopt.__main__ import main\n"
        "sys.exit(main(['demo', '--optimizer', 'SGD', '--epochs', '1', '--no-progress']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0
    assert "summary" in result.stdout
    assert result.stderr == (
        'mxopt: no picture: pictures need matplotlib: pip install "mxopt[plot]" (or --no-plot)\n'
    )
    assert not (tmp_path / "demo.png").exists()


def test_bench_help_suite_shows_the_suite_options(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--help-suite"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--regimes" in out and "--quick" in out


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    config = tmp_path / "one_cycle.toml"
    config.write_text(ONE_CYCLE_TOML)
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib now fails
        "from mxopt.__main__ import main\n"
        f"sys.exit(main(['plot-schedule', {str(config)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == 'mxopt: error: pictures need matplotlib: pip install "mxopt[plot]"\n'


def test_python_dash_m_runs_the_same_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "mxopt", "warmup", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--dtypes" in result.stdout


def test_bench_options_reach_the_suite(capsys):
    # options right after `bench` go to the suite's parser, not to mxopt's
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--regimes", "bogus"])
    assert exited.value.code == 2
    assert "argument --regimes: invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_distributed_quick_mode(tmp_path):
    import json

    from mxopt.cli import bench_distributed

    why = bench_distributed.why_not_available()
    if why is not None:
        pytest.skip(why)
    out = tmp_path / "results"
    argv = ["bench", "--regimes", "distributed", "--quick", "--optimizers", "adam",
            "--ranks", "2", "--repeats", "1", "--no-startup", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "bench.json").read_text())["distributed"]
    assert data["shapes"] == "bert-like-small"
    rows = {(r["reduce"], r["ranks"]): r for r in data["rows"]}
    assert set(rows) == {(reduce, n) for reduce in ("sum", "ordered") for n in (1, 2)}
    one, two = rows["ordered", 1], rows["ordered", 2]
    assert one["communicated_bytes"] == 0 and one["step_vs_1_rank"] == 1.0
    # reduce-scatter of the gradients + all-gather of the weights, and a few kB of statistics
    assert two["bytes_per_step"]["reduce_scatter"] == two["bytes_per_step"]["all_gather"]
    assert two["bytes_per_step"]["reduce_scatter"] == 4 * data["elements"]
    assert 1.0 < two["communicated_vs_expected"] < 1.01
    assert two["state_vs_1_rank"] == pytest.approx(0.5, abs=0.02)  # half the state each
    assert two["weights_agree"] and two["step_ms"] > 0
    assert 0 < two["communication_ms"] < two["step_ms"]
    text = (out / "bench.md").read_text()
    assert "### Distributed (ShardedUpdater, bert-like-small" in text
    assert "| adam | ordered | 2 |" in text


def test_bench_distributed_report_says_when_ranks_share_cores():
    from mxopt.cli.bench_distributed import distributed_report

    row = {"optimizer": "adam", "reduce": "ordered", "oversubscribed": False, "step_ms": 10.0,
           "step_vs_1_rank": 1.0, "communication_ms": 0.0, "update_ms": 10.0,
           "communicated_bytes": 0, "expected_bytes": 0, "communicated_vs_expected": None,
           "state_bytes_max_rank": 8e6, "state_vs_1_rank": 1.0, "ranks": 1}  # fmt: skip
    four = row | {"ranks": 4, "oversubscribed": True, "step_ms": 20.0, "step_vs_1_rank": 2.0,
                  "communication_ms": 15.0, "update_ms": 5.0, "communicated_bytes": 8.1e6,
                  "expected_bytes": 8e6, "communicated_vs_expected": 1.0125,
                  "state_bytes_max_rank": 2e6, "state_vs_1_rank": 0.25}  # fmt: skip
    data = {"shapes": "bert-base", "tensors": 199, "elements": 10**6, "cpus": 2,
            "rows": [row, four]}  # fmt: skip
    text = distributed_report(data)
    assert (
        "| adam | ordered | 4* | 20.00 | 2.00 | 15.00 | 5.00 | 75% | 8.1 | 8.0 | 1.0125 |" in text
    )
    assert "0.250 (1/4 = 0.250)" in text
    assert "4 ranks on 2 CPUs: oversubscribed" in text
    assert distributed_report(None) == ""
    assert "skipped: no MPI" in distributed_report({"skipped": "no MPI"})


def test_every_module_imports():
    """Every module of mxopt imports (the quick subset's floor: `pytest -m quick` touches
    them all); modules of optional extras may say which extra they need instead."""
    import importlib
    import pkgutil

    names = [m.name for m in pkgutil.walk_packages(mxopt.__path__, "mxopt.")]
    assert len(names) > 70
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:  # an optional dependency, named in the message
            assert "pip install" in str(error) or error.name not in (None, name), name


def test_bench_numpy_peer_steps_like_mxopt():
    """The benchmark's hand-written NumPy peer (mxopt.cli.bench_peers) runs, and mxopt's
    side of the comparison is the optimizer it names."""
    import numpy as np

    from mxopt.cli import bench_peers

    state = mxopt.OptimizationState(batch_size=1)
    assert type(bench_peers.mxopt_optimizer("adam", state)) is mxopt.ADAM
    step = bench_peers.numpy_step("adam", [(3, 4), (5,)], np.random.default_rng(0))
    step()
