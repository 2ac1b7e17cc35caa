"""spaCy as its users run it: ``spacy train`` on a config whose optimizer is mxopt's.

A blank English ``textcat`` pipeline (spaCy's own ``init config``, efficiency preset) is
trained through the ``spacy train`` command line, in a child process, on a small
sentiment task the test writes (a few hundred short texts whose label a handful of words
decide), once with ``@optimizers = "mxopt.Adam.v1"`` and once with
``"mxopt.Optimizer.v1"`` around ``mxopt.AdamW.v1``. The test checks that the run
succeeds, that the model learns (the textcat score of the best model, measured by
spaCy on the held-out texts, well above chance), and that the saved pipeline loads and
classifies new texts. spaCy is the ``spacy`` extra (``pip install -e ".[test,spacy]"``);
without it the test skips. About 30 s per run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

spacy = pytest.importorskip("spacy")

POSITIVE = ["great", "excellent", "lovely", "wonderful", "superb", "delightful"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "poor", "horrible"]
FILLER = ["the", "film", "was", "a", "plot", "with", "and", "actors", "story", "really",
          "quite", "music", "ending", "scenes", "very", "it"]  # fmt: skip


def _texts(rng, count: int):
    for _ in range(count):
        positive = bool(rng.integers(2))
        words = list(rng.choice(FILLER, size=8))
        key = rng.choice(POSITIVE if positive else NEGATIVE)
        words.insert(int(rng.integers(len(words) + 1)), str(key))
        yield " ".join(words), positive


def _write(path, rng, count: int) -> None:
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = DocBin()
    for text, positive in _texts(rng, count):
        doc = nlp.make_doc(text)
        doc.cats = {"POSITIVE": float(positive), "NEGATIVE": float(not positive)}
        docs.add(doc)
    docs.to_disk(path)


OPTIMIZERS = {
    "mxopt.Adam.v1": {"@optimizers": "mxopt.Adam.v1", "learn_rate": 0.001},
    "mxopt.Optimizer.v1": {
        "@optimizers": "mxopt.Optimizer.v1",
        "optimizer": {"@optimizers": "mxopt.AdamW.v1", "lr": 0.001, "weight_decay": 0.01},
        "use_averages": True,
    },
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_spacy_train_learns_with_mxopt_and_the_pipeline_loads(name, tmp_path):
    from spacy.cli.init_config import init_config

    rng = np.random.default_rng(0)
    _write(tmp_path / "train.spacy", rng, 400)
    _write(tmp_path / "dev.spacy", rng, 100)
    config = init_config(lang="en", pipeline=["textcat"], optimize="efficiency")
    config["paths"]["train"] = str(tmp_path / "train.spacy")
    config["paths"]["dev"] = str(tmp_path / "dev.spacy")
    config["training"]["optimizer"] = OPTIMIZERS[name]
    config["training"]["max_steps"] = 300
    config["training"]["eval_frequency"] = 100
    config["training"]["seed"] = 0
    config.to_disk(tmp_path / "config.cfg")

    run = subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(tmp_path / "config.cfg"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    best = tmp_path / "out" / "model-best"
    meta = json.loads((best / "meta.json").read_text())
    assert meta["performance"]["cats_score"] > 0.9, meta["performance"]  # chance: 0.5
    nlp = spacy.load(best)
    assert nlp("the story was really excellent").cats["POSITIVE"] > 0.5
    assert nlp("the story was really awful").cats["NEGATIVE"] > 0.5
    saved = (best / "config.cfg").read_text()
    assert f'@optimizers = "{name}"' in saved
