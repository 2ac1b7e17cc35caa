"""Config files and registries: every optimizer and schedule round-trips through dicts,
Thinc-style config text, TOML and JSON (build, export, build again: equal), and bad
configs give errors that name the path inside the config."""

from __future__ import annotations

import importlib.util
import json
import sys

import attrs
import pytest

import mxopt
from mxopt import LearningRate as L
from mxopt import Momentum as M
from mxopt.core.fields import hyperparameter
from mxopt.core.schedule import AbstractLearningRateScheduler
from mxopt.persist import config as C
from mxopt.persist.config import ConfigError
from tests.cases import required_options
from tests.schedule_samples import all_samples

HAS_CONFECTION = importlib.util.find_spec("confection") is not None
needs_confection = pytest.mark.skipif(not HAS_CONFECTION, reason="confection is not installed")

FORMATS = ["toml", "json", pytest.param("cfg", marks=needs_confection)]

#: Schedules that wrap Python code and so have no config.
CODE_SCHEDULES = {
    "LearningRate.FromGenerator",
    "LearningRate.FromCallable",
    "Momentum.FromCallable",
}


def optimizer_samples():
    return [(name, cls(**required_options(name))) for name, cls in mxopt.OPTIMIZERS.items()]


def schedule_samples():
    return [(label, s) for label, s in all_samples() if label not in CODE_SCHEDULES]


def all_objects():
    objects = optimizer_samples() + schedule_samples()
    objects += [("EMA", mxopt.EMA(decay=0.99, warmup=False)), ("Polyak", mxopt.Polyak())]
    objects.append(
        (
            "SGD+schedules",
            mxopt.SGD(
                lr_scheduler=L.Join([L.Linear(0.0, 0.1, 5), L.CosineAnnealing(0.1, 10)], [5]),
                momentum_scheduler=M.Cyclic(0.8, 0.9, 3),
            ),
        )
    )
    return objects


def round_trip(obj, format):
    text = mxopt.dumps_config(obj, format)
    built = mxopt.from_config(text)
    return text, built


# -- registries ----------------------------------------------------------------------------


def test_every_registered_name_is_in_the_catalogue_registries():
    from mxopt.persist import registry

    for kind, table in C.registered().items():
        catalogue_registry = registry.REGISTRIES[kind]
        for name, cls in table.items():
            assert catalogue_registry.get(name) is cls
            assert registry.get(kind, name) is cls
        assert set(table) <= set(registry.names(kind))


def test_every_optimizer_and_schedule_class_has_a_registered_name():
    names = {cls: name for table in C.registered().values() for name, cls in table.items()}
    for name, cls in mxopt.OPTIMIZERS.items():
        assert names[cls] == f"mxopt.{name}.v1"
    for label, schedule in all_samples():
        assert names[type(schedule)] == f"mxopt.{label}.v1"


def test_importing_mxopt_does_not_import_the_registry_libraries():
    import subprocess

    code = (
        "import sys, mxopt; "
        "bad = [m for m in ('catalogue', 'confection', 'thinc') "
        "if m in sys.modules]; assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("label, obj", all_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_dict_round_trip(label, obj):
    config = mxopt.to_config(obj)
    built = mxopt.from_config(config)
    assert built == obj and type(built) is type(obj)
    assert mxopt.to_config(built) == config
    assert json.loads(json.dumps(config)) == config  # JSON-ready


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("label, obj", all_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_text_round_trip(label, obj, format):
    text, built = round_trip(obj, format)
    assert built == obj and type(built) is type(obj), text
    assert mxopt.dumps_config(built, format) == text  # export again: the same text


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize(
    "label, schedule", schedule_samples(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_schedules_nested_in_an_optimizer_round_trip(label, schedule, format):
    if label.startswith("LearningRate."):
        obj = mxopt.ADAM(lr_scheduler=schedule)
    else:
        obj = mxopt.SGD(momentum_scheduler=schedule)
    _, built = round_trip(obj, format)
    assert built == obj


@pytest.mark.parametrize("suffix", [".toml", ".json", pytest.param(".cfg", marks=needs_confection)])
def test_file_round_trip(tmp_path, suffix):
    obj = mxopt.AdamW(lr=3e-4, lr_scheduler=L.WarmupCosine(3e-4, 100, 1000))
    path = tmp_path / f"optimizer{suffix}"
    mxopt.save_config(obj, path)
    assert mxopt.from_config(path) == obj
    assert mxopt.from_config(str(path)) == obj
    assert mxopt.persist.config.load(path, section="optimizer") == obj
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_code_schedules_cannot_be_written():
    for label, schedule in all_samples():
        if label in CODE_SCHEDULES:
            with pytest.raises(ConfigError, match="cannot be written as a config"):
                mxopt.dumps_config(schedule, "toml")


def test_toml_leaves_out_none_defaults_only():
    text = mxopt.dumps_config(mxopt.SGD(), "toml")
    assert "lr_scheduler" not in text and "null" not in text
    assert mxopt.from_config(text) == mxopt.SGD()


# -- reading ---------------------------------------------------------------------------------

THINC_STYLE = """
[optimizer]
@optimizers = "mxopt.ADAM.v1"
lr = 0.001
weight_decay = 0.0

[optimizer.lr_scheduler]
@schedules = "mxopt.LearningRate.Cosine.v1"
max_update = 1000
base_lr = ${optimizer.lr}
final_lr = 1e-5
"""

TOML = """
[optimizer]
"@optimizers" = "mxopt.ADAM.v1"
lr = 0.001
weight_decay = 0.0

[optimizer.lr_scheduler]
"@schedules" = "mxopt.LearningRate.Cosine.v1"
max_update = 1000
base_lr = 0.001
final_lr = 1e-5
"""

EXPECTED = mxopt.ADAM(lr=0.001, weight_decay=0.0, lr_scheduler=L.Cosine(1000, 0.001, final_lr=1e-5))


@needs_confection
def test_thinc_style_config_with_interpolation():
    assert mxopt.from_config(THINC_STYLE) == EXPECTED
    assert mxopt.from_config(THINC_STYLE, section="optimizer") == EXPECTED


def test_toml_text_and_plain_dicts():
    assert mxopt.from_config(TOML) == EXPECTED
    sections = {"optimizer": mxopt.to_config(EXPECTED), "other": {"x": 1}}
    assert mxopt.from_config(sections) == EXPECTED
    assert mxopt.from_config(sections, section="optimizer") == EXPECTED


@needs_confection
def test_section_inside_a_larger_config():
    text = THINC_STYLE.replace("[optimizer", "[training.optimizer").replace(
        "${optimizer.lr}", "${training.optimizer.lr}"
    )
    text = "[training]\nmax_steps = 10\n" + text
    assert mxopt.from_config(text) == EXPECTED  # the one object, found in training.optimizer
    assert mxopt.from_config(text, section="training.optimizer") == EXPECTED


def test_the_optimizer_section_is_preferred_and_ambiguity_is_an_error():
    both = {"optimizer": mxopt.to_config(EXPECTED), "schedule": mxopt.to_config(L.Fixed(0.1))}
    assert mxopt.from_config(both) == EXPECTED
    assert mxopt.from_config(both, section="schedule") == L.Fixed(0.1)
    two = {"a": mxopt.to_config(L.Fixed(0.1)), "b": mxopt.to_config(L.Fixed(0.2))}
    with pytest.raises(ConfigError, match=r"several objects in this config \(a, b\).*section="):
        mxopt.from_config(two)


# -- errors name the config path -------------------------------------------------------------


def test_bad_value_names_its_path_in_toml():
    text = TOML.replace("final_lr = 1e-5", "final_lr = 1e-5\nwarmup_steps = 2.0")
    bad = TOML.replace('"@schedules" = "mxopt.LearningRate.Cosine.v1"',
                       '"@schedules" = "mxopt.LearningRate.Exp.v1"\ngamma = 2.0')  # fmt: skip
    bad = bad.replace("max_update = 1000\nbase_lr = 0.001\nfinal_lr = 1e-5", "lr = 0.1")
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_scheduler\.gamma: .*got 2\.0"):
        mxopt.from_config(bad)
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_scheduler\.warmup_steps: "):
        mxopt.from_config(text)


@needs_confection
def test_bad_value_names_its_path_in_thinc_style_text():
    bad = THINC_STYLE.replace("final_lr = 1e-5", "final_lr = -1.0")
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_scheduler\.final_lr: .*got -1\.0"):
        mxopt.from_config(bad)


def test_bad_value_in_a_file_names_the_file_and_the_path(tmp_path):
    path = tmp_path / "opt.toml"
    path.write_text(TOML.replace("lr = 0.001", "lr = -0.5", 1))
    with pytest.raises(ConfigError, match=r"opt\.toml: optimizer\.lr: .*got -0\.5"):
        mxopt.from_config(path)


def test_unknown_optimizer_lists_close_matches():
    with pytest.raises(ConfigError) as error:
        mxopt.from_config({"optimizer": {"@optimizers": "mxopt.Adamm.v1"}})
    message = str(error.value)
    assert message.startswith("optimizer: unknown optimizer 'mxopt.Adamm.v1'; did you mean ")
    assert "'mxopt.ADAM.v1'" in message
    assert "known:" not in message  # the close matches, not a list of every name


def test_unknown_optimizer_with_no_close_match_lists_every_name():
    with pytest.raises(ConfigError, match=r"unknown optimizer 'zzqqxx' \(known: ") as error:
        mxopt.from_config({"optimizer": {"@optimizers": "zzqqxx"}})
    assert all(name in str(error.value) for name in ("mxopt.SGD.v1", "mxopt.AdamW.v1"))


@pytest.mark.parametrize(
    "name, meant",
    [
        ("AdamW", "'mxopt.AdamW.v1'"),  # the bare class name
        ("adamw", "'mxopt.AdamW.v1'"),
        ("mxopt.adamw.v2", "'mxopt.AdamW.v1'"),
        ("RAdm", "'mxopt.RAdam.v1'"),  # close to the part between mxopt. and .v1
    ],
)
def test_unknown_optimizer_suggests_the_full_registered_name(name, meant):
    with pytest.raises(ConfigError) as error:
        mxopt.from_config({"optimizer": {"@optimizers": name}})
    suggested = str(error.value).split("(known")[0]
    assert suggested.startswith(f"optimizer: unknown optimizer {name!r}; did you mean {meant}")


def test_bare_schedule_names_suggest_the_registered_names():
    from mxopt.persist.registry import suggestion

    known = mxopt.registry.known_names("schedules")
    assert suggestion("OneCycle", known) == (
        "; did you mean 'mxopt.LearningRate.OneCycle.v1' or 'mxopt.Momentum.OneCycle.v1'?"
    )
    assert suggestion("LearningRate.Exp", known) == "; did you mean 'mxopt.LearningRate.Exp.v1'?"
    assert suggestion("lrr", ["lr", "momentum"]) == "; did you mean 'lr'?"  # plain words


def test_unknown_schedule_version_and_registry_key():
    config = mxopt.to_config(mxopt.ADAM(lr_scheduler=L.Fixed(0.1)))
    config["lr_scheduler"]["@schedules"] = "mxopt.LearningRate.Fixed.v2"
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_scheduler: unknown schedule "
                                          r"'mxopt\.LearningRate\.Fixed\.v2'; did you mean "
                                          r"'mxopt\.LearningRate\.Fixed\.v1'"):  # fmt: skip
        mxopt.from_config({"optimizer": config})
    with pytest.raises(
        ConfigError, match=r"unknown registry '@optimizer'.*did you mean '@optimizers'"
    ):
        mxopt.from_config({"@optimizer": "mxopt.SGD.v1"})


def test_unknown_and_missing_options():
    with pytest.raises(ConfigError, match=r"^optimizer\.lrr: unknown option of mxopt\.SGD\.v1; "
                                          r"did you mean 'lr'"):  # fmt: skip
        mxopt.from_config({"optimizer": {"@optimizers": "mxopt.SGD.v1", "lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_scheduler: .*needs option\(s\) "
                                          r"'max_update'"):  # fmt: skip
        mxopt.from_config(
            {"optimizer": {"@optimizers": "mxopt.SGD.v1",
                           "lr_scheduler": {"@schedules": "mxopt.LearningRate.Cosine.v1"}}}
        )  # fmt: skip
    with pytest.raises(ConfigError, match=r"^optimizer\.state: unknown option"):
        mxopt.from_config({"optimizer": {"@optimizers": "mxopt.SGD.v1", "state": {}}})


def test_errors_inside_lists_name_the_index():
    config = mxopt.to_config(L.Join([L.Linear(0.0, 0.1, 5), L.CosineAnnealing(0.1, 10)], [5]))
    config["schedules"][1]["lr"] = "high"
    with pytest.raises(ConfigError, match=r"^lr_scheduler\.schedules\[1\]\.lr: .*'high'"):
        mxopt.from_config({"lr_scheduler": config})


def test_wrong_kind_of_value_and_missing_section():
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_scheduler: "):
        mxopt.from_config({"optimizer": {"@optimizers": "mxopt.SGD.v1", "lr_scheduler": 0.1}})
    with pytest.raises(ConfigError, match=r"no section 'optimizr'.*did you mean 'optimizer'"):
        mxopt.from_config({"optimizer": mxopt.to_config(mxopt.SGD())}, section="optimizr")
    with pytest.raises(ConfigError, match="nothing to build"):
        mxopt.from_config({"training": {"max_steps": 3}})


def test_syntax_errors():
    with pytest.raises(ConfigError, match="not valid TOML"):
        mxopt.from_config('[optimizer]\n"@optimizers" = \n', section="optimizer")  # bad TOML
    with pytest.raises(ConfigError, match="not valid JSON"):
        mxopt.from_config('{"optimizer": ')
    with pytest.raises(ConfigError, match="cannot read config file"):
        mxopt.from_config("no/such/file.cfg")


def test_thinc_style_text_without_confection_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "confection", None)  # import confection -> ImportError
    with pytest.raises(ConfigError, match=r"needs confection.*pip install confection"):
        mxopt.from_config(THINC_STYLE)
    assert mxopt.from_config(TOML) == EXPECTED  # TOML needs nothing extra


def test_none_that_is_not_a_default_cannot_be_toml():
    config = mxopt.to_config(mxopt.SGD())
    config["lr"] = None
    with pytest.raises(ConfigError, match=r"^optimizer\.lr: None cannot be written in TOML"):
        mxopt.dumps_config(config, "toml")


# -- extensions through catalogue ------------------------------------------------------------


@attrs.frozen
class Halving(AbstractLearningRateScheduler):
    """Test schedule: ``lr / 2**(curr_iter // every)``."""

    lr: float = hyperparameter(0.1, gt=0.0)
    every: int = 10

    def value(self, state):
        return self.lr / 2 ** (state.curr_iter // self.every)


@pytest.fixture
def halving_registered():
    import catalogue

    from mxopt.persist import registry

    registry.schedules.register("tests.Halving.v1", func=Halving)
    yield
    catalogue.REGISTRY.pop(("mxopt", "schedules", "tests.Halving.v1"), None)


def test_user_registered_schedule_builds_and_exports(halving_registered):
    obj = mxopt.SGD(lr_scheduler=Halving(0.2, 5))
    config = mxopt.to_config(obj)
    assert config["lr_scheduler"]["@schedules"] == "tests.Halving.v1"
    for format in ("toml", "json"):
        assert mxopt.from_config(mxopt.dumps_config(obj, format)) == obj
    assert "tests.Halving.v1" in mxopt.registry.names("schedules")
    with pytest.raises(ConfigError, match="unknown schedule 'tests.Halving.v1'"):
        mxopt.from_config(config, extensions=False)  # built-in names only


def test_builtin_names_cannot_be_replaced():
    import catalogue

    from mxopt.persist import registry

    registry.optimizers.register("mxopt.SGD.v1", func=mxopt.ADAM)
    try:
        assert type(mxopt.from_config({"@optimizers": "mxopt.SGD.v1"})) is mxopt.SGD
    finally:
        registry.optimizers.register("mxopt.SGD.v1", func=mxopt.SGD)
        assert catalogue.REGISTRY[("mxopt", "optimizers", "mxopt.SGD.v1")] is mxopt.SGD
