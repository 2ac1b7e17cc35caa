"""Bounded parsing and messages: whatever a config, a schedule chain or a value quoted in
an error looks like, mxopt answers with a clear error of a line or two, never a
RecursionError, a message the size of the input or a long search for suggestions."""

from __future__ import annotations

import copy
import difflib
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxopt
from mxopt.core.checks import shown
from mxopt.core.schedule import MAX_NESTING
from mxopt.persist import config as C
from mxopt.persist import files
from mxopt.persist.registry import _difflib_matches
from mxopt.schedules import learning_rate as LR

#: Longest message any of these inputs may give (the inputs are megabytes; the list of
#: known schedules, which an unknown schedule's message gives, is about 1,400 characters).
MESSAGE_LIMIT = 2000
HUGE = "x" * 10_000_000


def nested_dict(depth: int) -> dict:
    config = {"@optimizers": "mxopt.ADAM.v1"}
    node, key = config, "lr_scheduler"
    for _ in range(depth):
        node[key] = {"@schedules": "mxopt.LearningRate.Warmup.v1", "steps": 1}
        node, key = node[key], "inner"
    node["inner"] = {"@schedules": "mxopt.LearningRate.Fixed.v1", "lr": 0.1}
    return config


def nested_list(depth: int) -> list:
    outer = inner = []
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


def config_error(source, **kwargs) -> str:
    with pytest.raises(C.ConfigError) as info:
        C.from_config(source, **kwargs)
    message = str(info.value)
    assert len(message) < MESSAGE_LIMIT, message[:300]
    return message


# -- depth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [files.MAX_DEPTH, 1000, 100_000])
def test_deeply_nested_dict_configs_are_refused(depth):
    assert "nested deeper than 32 levels" in config_error(nested_dict(depth))


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_lists_are_refused(depth):
    config = {"@optimizers": "mxopt.ADAM.v1", "lr": nested_list(depth)}
    assert "nested deeper than" in config_error(config)


@pytest.mark.parametrize(
    "text",
    [
        '{"optimizer": ' * 3000 + "1" + "}" * 3000,  # JSON tables
        '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",  # JSON lists
        "a = " + "[" * 3000 + "]" * 3000,  # TOML arrays
        '[optimizer]\n@optimizers = "mxopt.ADAM.v1"\nlr = ' + "[" * 2000 + "]" * 2000,  # cfg
    ],
    ids=["json-tables", "json-lists", "toml", "cfg"],
)
def test_deeply_nested_text_is_refused(text):
    assert "nested deeper than" in config_error(text)


def test_a_config_as_deep_as_allowed_builds():
    # depth counts tables and lists: the optimizer, then Warmups, then the Fixed inside
    config = nested_dict(files.MAX_DEPTH - 2)
    optimizer = C.from_config(config)
    assert isinstance(optimizer.opts.lr_scheduler, LR.Warmup)
    assert C.to_config(optimizer) == C.to_config(C.from_config(json.loads(json.dumps(config))))


# -- size -----------------------------------------------------------------------------------


def test_config_text_over_the_limit_is_refused():
    text = '[optimizer]\n@optimizers = "mxopt.ADAM.v1"\n# ' + "x" * files.MAX_TEXT + "\n"
    assert "configs are limited to" in config_error(text)


def test_a_config_file_over_the_limit_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "big.cfg"
    path.write_text('[optimizer]\n@optimizers = "mxopt.ADAM.v1"\n' + "#" * (2 * files.MAX_TEXT))
    sizes = []
    real_open = open

    class Counting:  # records how much of the file the reader asks for
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            sizes.append(n)
            return self.f.read(n)

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Counting(real_open(p, mode)))
    message = config_error(path)
    assert "larger than" in message and str(path) in message
    assert sizes and all(0 < n <= files.MAX_TEXT + 1 for n in sizes)


def test_a_binary_file_is_a_config_error(tmp_path):
    path = tmp_path / "optimizer.cfg"
    path.write_bytes(bytes(range(256)) * 4)
    assert "cannot read config file" in config_error(path)


def test_too_many_values_are_refused():
    config = {"@optimizers": "mxopt.ADAM.v1", "lr": list(range(files.MAX_VALUES + 1))}
    assert "more than 100000 values" in config_error(config)


def test_a_huge_integer_in_json_is_a_config_error():
    text = '{"optimizer": {"@optimizers": "mxopt.ADAM.v1", "lr": ' + "1" * 5000 + "}}"
    assert "not valid JSON" in config_error(text)


# -- long strings: short messages, no long "did you mean" search ----------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"@optimizers": HUGE},
        {"@optimizers": "mxopt.ADAM.v1", HUGE: 1},
        {"@optimizers": "mxopt.ADAM.v1", "lr": HUGE},
        {"@optimizers": "mxopt.ADAM.v1", "lr_scheduler": {"@schedules": HUGE}},
        {HUGE: 1},
    ],
    ids=["name", "key", "value", "nested-name", "registry"],
)
def test_a_ten_megabyte_string_gives_a_short_message(config):
    message = config_error(config)
    assert "(10000000 characters)" in message


def test_a_long_path_that_is_no_file_gives_a_short_message():
    assert "File name too long" in config_error("y" * 2_000_000)


def test_a_value_quoted_by_an_option_check_is_shortened():
    with pytest.raises(TypeError) as info:
        mxopt.ADAM(lr=HUGE)
    assert len(str(info.value)) < MESSAGE_LIMIT and "(10000000 characters)" in str(info.value)


def test_an_index_quoted_by_an_update_error_is_shortened():
    updater = mxopt.get_updater(mxopt.SGD(lr=0.1))
    weight = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError) as info:
        updater(HUGE, np.zeros(4, dtype=np.float32), weight)
    assert len(str(info.value)) < MESSAGE_LIMIT and "(10000000 characters)" in str(info.value)
    with pytest.raises(ValueError) as info:
        updater(10**5000, np.zeros(4, dtype=np.float32), weight)  # repr() of it would raise
    assert "an integer of about 5001 digits" in str(info.value)


@given(
    word=st.text(alphabet="abcdefgilmnoprstuvwxADLMRSW.1", min_size=0, max_size=60),
    candidates=st.lists(st.text(alphabet="abcdelmnoprstADM.v1", min_size=1, max_size=20)),
)
@settings(max_examples=300, deadline=None)
def test_skipping_the_search_for_long_words_changes_no_suggestion(word, candidates):
    # the reference: difflib itself, without the length shortcut
    expected = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    assert _difflib_matches(word, candidates) == expected


# -- shown ----------------------------------------------------------------------------------


def test_shown_keeps_short_values_as_repr():
    for value in [0.1, "lr", ("layer", 3), [1, 2], None, True, np.float32(1.5), 10**30]:
        assert shown(value) == repr(value)


def test_shown_bounds_every_kind_of_large_value():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no repr")

    for value, part in [
        (HUGE, "(10000000 characters)"),
        (10**5000, "<an integer of about 5001 digits>"),
        (-(10**400), "-<an integer of about 401 digits>"),
        (list(range(10**6)), "..."),
        (nested_list(5000), "[...]"),
        ({str(i): i for i in range(10**5)}, "..."),
        (Hostile(), "Hostile"),
    ]:
        text = shown(value)
        assert part in text and len(text) < 200, text


# -- schedule chains ------------------------------------------------------------------------


def warmup_chain(depth: int):
    schedule = LR.Fixed(0.1)
    for _ in range(depth - 1):
        schedule = LR.Warmup(schedule, steps=2)
    return schedule


def test_a_schedule_chain_deeper_than_the_limit_is_refused_with_the_depth():
    schedule = warmup_chain(MAX_NESTING)
    with pytest.raises(ValueError, match=r"inner nests schedules 33 deep; at most 32"):
        LR.Warmup(schedule, steps=2)
    for make in (lambda s: LR.Join([LR.Fixed(0.2), s], [3]), lambda s: LR.Product([s])):
        with pytest.raises(ValueError, match=r"schedules nests schedules 33 deep"):
            make(schedule)


def test_a_chain_as_deep_as_allowed_copies_pickles_configures_and_evaluates():
    schedule = warmup_chain(MAX_NESTING)
    # by hand: each of the 31 Warmups holds its inner schedule back 2 steps and ramps from 0
    # to the inner schedule's first value, which is 0 (another Warmup's begin) except for
    # the innermost Warmup, whose inner is Fixed(0.1): so 0 until t = 60, a ramp over
    # t = 60, 61, and 0.1 from t = 62 on
    for t in [0, 1, 2, 3, 59, 60, 61, 62, 63, 1000]:
        state = mxopt.OptimizationState(batch_size=1, curr_iter=t + 1)
        expected = 0.1 if t >= 62 else 0.1 * (t - 60) / 2 if t >= 60 else 0.0
        assert schedule.value(state) == pytest.approx(expected, rel=1e-15)
    for copied in (copy.deepcopy(schedule), pickle.loads(pickle.dumps(schedule))):
        assert copied == schedule
    assert C.from_config(C.to_config(schedule)) == schedule
    assert len(repr(schedule)) > 0
