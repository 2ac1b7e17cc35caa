"""benchmarks/bench_spacy.py: its training function runs with both optimizers and they agree.

A few steps of the benchmark's spaCy pipeline (blank English tagger + ner + textcat on
the synthetic corpus), in this process, with Thinc's Adam and with mxopt's adapter: the
same losses within a small tolerance (the adapter reproduces Thinc's Adam up to float32
rounding and the documented second-order differences). Also checks the corpus (entity
spans, labels) and that ``--help`` works. Skips without spaCy.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("spacy")

SCRIPT = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_spacy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_spacy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_fixed_and_consistent(bench):
    first, again = bench.make_corpus(50, seed=3), bench.make_corpus(50, seed=3)
    assert first == again
    assert {doc["label"] for doc in first} <= set(bench.TOPICS)
    for doc in first:
        assert len(doc["words"]) == len(doc["tags"])
        for start, end, label in doc["entities"]:
            assert 0 <= start < end <= len(doc["words"])
            assert label in ("PERSON", "ORG", "GPE")
        tags = bench._bilou(doc)
        assert len(tags) == len(doc["words"])


def test_both_optimizers_train_alike(bench):
    kwargs = {"docs": 120, "steps": 4, "warmup": 1, "batch_size": 16, "profile": True}
    results = {c: bench.train(c, **kwargs) for c in bench.CONTENDERS}
    thinc, mxopt = results["thinc"], results["mxopt"]
    assert set(thinc["losses"]) == set(mxopt["losses"]) == {"tagger", "ner", "textcat"}
    for name, value in thinc["losses"].items():
        assert mxopt["losses"][name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
    assert mxopt["loss_total"] == pytest.approx(thinc["loss_total"], rel=1e-4)
    for result in results.values():
        profile = result["profile"]
        assert profile["calls_per_step"] > 10  # one call per parameter of every component
        assert 0 < profile["optimizer_call_s"] < result["seconds"]


def test_help():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--repeats" in done.stdout and "--profile" in done.stdout


def test_interleaved_mode(bench):
    result = bench.interleaved(docs=64, steps=2, warmup=1, batch_size=16)
    for contender in bench.CONTENDERS:
        row = result["contenders"][contender]
        assert len(row["step_s"]) == 2
        assert 0 < row["optimizer_call_ms"] < row["step_ms"]
    assert result["step_ratio_mxopt_over_thinc"] > 0
