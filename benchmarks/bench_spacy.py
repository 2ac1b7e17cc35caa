"""A spaCy pipeline trained with mxopt's Thinc adapter against Thinc's own Adam.

    python benchmarks/bench_spacy.py [--repeats 3] [--steps 20] [--docs 1000] [--json PATH]
    python benchmarks/bench_spacy.py --profile        # where the time goes, per contender

A blank English pipeline with ``tagger``, ``ner`` and ``textcat`` (spaCy's default
architectures from the factories, each with its own tok2vec) is trained on a synthetic
in-memory corpus made with a fixed seed: sentences of a small vocabulary with a
part-of-speech tag per word, person / place / organisation spans and a document label
(SPORTS, POLITICS, BUSINESS or SCIENCE, decided by the topic words a sentence contains).
Nothing is downloaded. With four labels the textcat's bag-of-words layer has a weight of
4 x 262144 = 2^20 elements, the size from which mxopt's kernels use threads
(``MXOPT_PARALLEL_MIN_SIZE``), so the default setting exercises its thread pool on that
parameter; the other 82 parameters (3.4M elements in all) are below it.

Each run is one child process: ``spacy.util.fix_random_seed(0)``, ``nlp.initialize()``,
``--warmup`` untimed steps (they load the compiled Numba kernels, allocate the optimizer
state and fill spaCy's caches; ``python -m mxopt warmup`` is not needed, the kernels are
cached on disk after the first run), then ``--steps`` timed steps of
``nlp.update(batch, sgd=optimizer, drop=0.1, losses=losses)`` followed by
``optimizer.step_schedules()`` (what ``spacy train`` does per step), over minibatches of
``--batch-size`` documents cycling through the shuffled corpus. Only that loop is timed:
not the imports, the corpus, ``initialize()`` or the warm-up.

Contenders, with spaCy's default optimizer settings (``learn_rate=0.001``, ``L2=0.01``,
``grad_clip=1.0``, ``use_averages=True``, as ``spacy init config`` writes them):

* ``thinc``: ``thinc.api.Adam(...)``;
* ``mxopt``: ``mxopt.thinc.Adam(...)`` with the same arguments.

Thinc imports torch when it is installed (about 5 s per run on a 2-core machine); these
pipelines never use it, so each run hides it (``sys.modules["torch"] = None`` before
importing spaCy) unless ``--with-torch`` is given.

Thread settings: ``default`` (the environment as it is, less ``NUMBA_NUM_THREADS``,
``MXOPT_NUM_THREADS``, ``OMP_NUM_THREADS`` and the BLAS thread variables) and
``one-thread`` (``NUMBA_NUM_THREADS=1 MXOPT_NUM_THREADS=1``). Each of ``--repeats`` rounds
runs every (setting, contender) once, the contenders alternating and their order swapped
every round. The table gives the median wall time of the timed loop per contender and
setting, the ratio mxopt/thinc of the medians, the spread (max/min over rounds), the
summed loss of the last step of each component, the median time of the untimed
warm-up steps (the first step of a process loads the compiled kernels: Numba's import and
cache loading, a one-time cost of mxopt's), and how far the final weights of the two
contenders are apart (max |diff| over every parameter, from the first round). The load
average is recorded before and after; the run is flagged ``NOT TRUSTWORTHY`` when the
machine was busy, and every spread above 1.3 is marked ``~``.

``--profile`` runs each contender once per setting (unless ``--repeats``) with the
optimizer wrapped in a timer: time inside the optimizer's calls (``optimizer(key,
weights, gradient)``, as ``Model.finish_update`` makes them), inside
``step_schedules()``, and the rest of the step (spaCy's forward and backward passes),
plus the number of calls per step and the time of the calls on parameters of 2^20
elements or more (where mxopt's kernels use threads). It saves ``bench_spacy_profile.json``.

``--interleaved`` trains both contenders in one process, their steps alternating (same
batches, same dropout), and gives the median step, optimizer and rest times per
contender: the steadiest figure on a busy machine, but without the process-level costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONTENDERS = ("thinc", "mxopt")
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "MXOPT_NUM_THREADS", "OMP_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")  # fmt: skip
SETTINGS = {
    "default": {},
    "one-thread": {"NUMBA_NUM_THREADS": "1", "MXOPT_NUM_THREADS": "1"},
}
#: spaCy's default ``[training.optimizer]`` (``spacy init config``): Adam.v1 with these.
OPTIMIZER_SETTINGS = {"learn_rate": 0.001, "L2": 0.01, "grad_clip": 1.0, "use_averages": True}
NOISY_SPREAD = 1.3

# -- the corpus ------------------------------------------------------------------------

PEOPLE = ["Anna Berg", "Tom", "Maria Lopez", "Chen Wei", "Olga", "Sam Green", "Ravi Patel"]
PLACES = ["Paris", "Lagos", "New York", "Oslo", "Lima", "Cape Town", "Kyoto"]
ORGS = ["Acme Corp", "the United Nations", "FC Porto", "Globex", "the Senate", "Initech"]
TOPICS = {
    "SPORTS": ["match", "goal", "coach", "season", "team", "league", "final"],
    "POLITICS": ["vote", "election", "minister", "law", "party", "debate", "policy"],
    "BUSINESS": ["market", "shares", "profit", "deal", "company", "investors", "bank"],
    "SCIENCE": ["study", "telescope", "vaccine", "experiment", "data", "climate", "species"],
}
VERBS = ["said", "won", "lost", "announced", "visited", "praised", "criticised", "joined"]
ADJECTIVES = ["new", "big", "important", "surprising", "late", "early", "strong", "weak"]
DETERMINERS = ["the", "a", "this", "every"]
PREPOSITIONS = ["in", "after", "before", "during", "with"]
ADVERBS = ["yesterday", "today", "again", "finally"]


def _entity(rng, label: str, names: list[str]) -> list[tuple[str, str, str]]:
    words = str(rng.choice(names)).split()
    tag = "DET" if words[0] == "the" else "PROPN"
    tokens = [(words[0], tag, label)]
    tokens += [(w, "PROPN", label) for w in words[1:]]
    return tokens


def make_corpus(count: int, seed: int = 0) -> list[dict]:
    """``count`` synthetic documents: ``{"words", "tags", "entities", "label"}``.

    A document is one or two sentences of the form ENTITY VERB DET ADJ TOPIC PREP PLACE
    ADV . with variations; ``entities`` are ``(start, end, label)`` token spans (PERSON,
    GPE, ORG) and ``label`` is the topic whose words the document uses.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = list(TOPICS)
    docs = []
    for _ in range(count):
        label = labels[int(rng.integers(len(labels)))]
        tokens: list[tuple[str, str, str | None]] = []
        for _ in range(int(rng.integers(1, 3))):
            subject = (PEOPLE, "PERSON") if rng.random() < 0.6 else (ORGS, "ORG")
            tokens += _entity(rng, subject[1], subject[0])
            tokens.append((str(rng.choice(VERBS)), "VERB", None))
            tokens.append((str(rng.choice(DETERMINERS)), "DET", None))
            if rng.random() < 0.7:
                tokens.append((str(rng.choice(ADJECTIVES)), "ADJ", None))
            tokens.append((str(rng.choice(TOPICS[label])), "NOUN", None))
            if rng.random() < 0.8:
                tokens.append((str(rng.choice(PREPOSITIONS)), "ADP", None))
                tokens += _entity(rng, "GPE", PLACES)
            if rng.random() < 0.5:
                tokens.append((str(rng.choice(ADVERBS)), "ADV", None))
            tokens.append((".", "PUNCT", None))
        words = [t[0] for t in tokens]
        tags = [t[1] for t in tokens]
        entities, start = [], None
        for i, (_, _, ent) in enumerate([*tokens, ("", "", None)]):
            if start is not None and (i == len(tokens) or ent != tokens[start][2]):
                entities.append((start, i, tokens[start][2]))
                start = None
            if start is None and ent is not None:
                start = i
        docs.append({"words": words, "tags": tags, "entities": entities, "label": label})
    return docs


# -- one training run (in the child process) ---------------------------------------------


def make_optimizer(contender: str):
    if contender == "thinc":
        from thinc.api import Adam
    elif contender == "mxopt":
        from mxopt.thinc import Adam
    else:
        raise ValueError(f"unknown contender {contender!r}; choose from {CONTENDERS}")
    return Adam(**OPTIMIZER_SETTINGS)


class TimedOptimizer:
    """Wraps an optimizer: times its calls and ``step_schedules()``, delegates the rest."""

    def __init__(self, optimizer):
        self._optimizer = optimizer
        self.call_seconds = 0.0
        self.calls = 0
        self.schedule_seconds = 0.0
        self.large_seconds = 0.0
        self.large_calls = 0

    #: parameters of at least this many elements are also timed on their own (mxopt's
    #: kernels use threads from 2^20 elements by default)
    LARGE = 1 << 20

    def __call__(self, key, weights, gradient, **kwargs):
        start = time.perf_counter()
        try:
            return self._optimizer(key, weights, gradient, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            self.call_seconds += seconds
            self.calls += 1
            if weights.size >= self.LARGE:
                self.large_seconds += seconds
                self.large_calls += 1

    def step_schedules(self):
        start = time.perf_counter()
        self._optimizer.step_schedules()
        self.schedule_seconds += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self._optimizer, name)


def build_pipeline(corpus: list[dict], pipes=("tagger", "ner", "textcat")):
    """A blank English pipeline with ``pipes`` (default factories) and its examples."""
    import spacy
    from spacy.tokens import Doc
    from spacy.training import Example

    nlp = spacy.blank("en")
    for pipe in pipes:
        nlp.add_pipe(pipe)
    labels = list(TOPICS)
    examples = []
    for doc in corpus:
        predicted = Doc(nlp.vocab, words=doc["words"])
        reference = {
            "tags": doc["tags"],
            "entities": _bilou(doc),
            "cats": {label: float(label == doc["label"]) for label in labels},
        }
        examples.append(Example.from_dict(predicted, reference))
    return nlp, examples


def _bilou(doc: dict) -> list[str]:
    tags = ["O"] * len(doc["words"])
    for start, end, label in doc["entities"]:
        if end - start == 1:
            tags[start] = f"U-{label}"
        else:
            tags[start] = f"B-{label}"
            tags[start + 1 : end - 1] = [f"I-{label}"] * (end - start - 2)
            tags[end - 1] = f"L-{label}"
    return tags


def parameters(nlp) -> dict:
    """Every parameter of every trainable component, keyed ``pipe/node-index/name``."""
    import numpy as np

    params = {}
    for pipe_name, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if model in (None, True, False):
            continue
        for index, node in enumerate(model.walk()):
            for name in node.param_names:
                if node.has_param(name):
                    key = f"{pipe_name}/{index}/{node.name}/{name}"
                    params[key] = np.asarray(node.get_param(name)).copy()
    return params


def train(
    contender: str,
    *,
    docs: int = 1000,
    steps: int = 20,
    warmup: int = 3,
    batch_size: int = 32,
    seed: int = 0,
    profile: bool = False,
    pipes=("tagger", "ner", "textcat"),
    weights_out: str | None = None,
) -> dict:
    """Train the pipeline with ``contender``'s optimizer; returns the timings and losses.

    ``warmup`` untimed steps, then ``steps`` timed ones (``nlp.update`` and
    ``optimizer.step_schedules()``). ``losses`` is the last timed step's loss per
    component; ``loss_total`` sums every timed step's losses.
    """
    import numpy as np
    import spacy

    setup_start = time.perf_counter()
    corpus = make_corpus(docs, seed)
    nlp, examples = build_pipeline(corpus, pipes)
    spacy.util.fix_random_seed(seed)
    optimizer = make_optimizer(contender)
    nlp.initialize(lambda: examples[:200], sgd=optimizer)
    sgd = TimedOptimizer(optimizer) if profile else optimizer
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    batches = [
        [examples[i] for i in order[start : start + batch_size]]
        for start in range(0, len(examples) - batch_size + 1, batch_size)
    ]

    def step(i: int) -> dict:
        losses: dict = {}
        nlp.update(batches[i % len(batches)], sgd=sgd, drop=0.1, losses=losses)
        sgd.step_schedules()
        return losses

    setup_s = time.perf_counter() - setup_start
    warmup_start = time.perf_counter()
    for i in range(warmup):
        step(i)
    warmup_s = time.perf_counter() - warmup_start
    if profile:
        sgd.call_seconds = sgd.schedule_seconds = sgd.large_seconds = 0.0
        sgd.calls = sgd.large_calls = 0
    total = 0.0
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        losses = step(i)
        total += sum(losses.values())
    seconds = time.perf_counter() - start
    result = {
        "contender": contender,
        "seconds": seconds,
        "steps": steps,
        "losses": {k: float(v) for k, v in losses.items()},
        "loss_total": float(total),
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "threads": _thread_info(contender),
    }
    if profile:
        result["profile"] = {
            "optimizer_call_s": sgd.call_seconds,
            "step_schedules_s": sgd.schedule_seconds,
            "rest_s": seconds - sgd.call_seconds - sgd.schedule_seconds,
            "calls_per_step": sgd.calls / steps,
            "large_call_s": sgd.large_seconds,
            "large_calls_per_step": sgd.large_calls / steps,
        }
    if weights_out is not None:
        np.savez(weights_out, **parameters(nlp))
    return result


def _thread_info(contender: str) -> dict:
    info = {name: os.environ.get(name) for name in ("NUMBA_NUM_THREADS", "MXOPT_NUM_THREADS")}
    if contender == "mxopt":
        from mxopt.kernels import threads

        info["mxopt_pool_threads"] = threads.pool().threads
    import threading

    info["python_threads"] = threading.active_count()
    return info


def interleaved(
    *, docs: int = 1000, steps: int = 20, warmup: int = 3, batch_size: int = 32, seed: int = 0
) -> dict:
    """Both contenders in this process, their steps alternating (``--interleaved``).

    Two identical pipelines, one per optimizer, each wrapped in :class:`TimedOptimizer`;
    step ``i`` of both uses the same batch and the same dropout seed, and which one goes
    first alternates. Noise from other processes hits both alike, so the per-step
    ratios are steadier than those of separate runs (but the process-level costs, such
    as imports, are shared and not compared).
    """
    import numpy as np
    import spacy

    corpus = make_corpus(docs, seed)
    runs = {}
    for contender in CONTENDERS:
        nlp, examples = build_pipeline(corpus)
        spacy.util.fix_random_seed(seed)
        optimizer = make_optimizer(contender)
        nlp.initialize(lambda examples=examples: examples[:200], sgd=optimizer)
        runs[contender] = (nlp, examples, TimedOptimizer(optimizer))
    order = np.random.default_rng(seed).permutation(docs)
    count = docs // batch_size
    samples = {c: {"step_s": [], "optimizer_call_s": [], "large_call_s": []} for c in CONTENDERS}
    for i in range(warmup + steps):
        rows = order[(i % count) * batch_size : (i % count + 1) * batch_size]
        for contender in CONTENDERS if i % 2 == 0 else CONTENDERS[::-1]:
            nlp, examples, sgd = runs[contender]
            sgd.call_seconds = sgd.large_seconds = 0.0
            spacy.util.fix_random_seed(seed + i)
            start = time.perf_counter()
            nlp.update([examples[j] for j in rows], sgd=sgd, drop=0.1, losses={})
            sgd.step_schedules()
            if i >= warmup:
                samples[contender]["step_s"].append(time.perf_counter() - start)
                samples[contender]["optimizer_call_s"].append(sgd.call_seconds)
                samples[contender]["large_call_s"].append(sgd.large_seconds)
    result = {"steps": steps, "contenders": {}}
    for contender, sample in samples.items():
        step_s, call_s = sample["step_s"], sample["optimizer_call_s"]
        result["contenders"][contender] = {
            "step_ms": statistics.median(step_s) * 1e3,
            "optimizer_call_ms": statistics.median(call_s) * 1e3,
            "rest_ms": statistics.median(s - c for s, c in zip(step_s, call_s, strict=True)) * 1e3,
            "large_call_ms": statistics.median(sample["large_call_s"]) * 1e3,
            "calls_per_step": runs[contender][2].calls / (warmup + steps),
            **sample,
        }
    pairs = zip(samples["mxopt"]["step_s"], samples["thinc"]["step_s"], strict=True)
    ratios = [m / t for m, t in pairs]
    result["step_ratio_mxopt_over_thinc"] = statistics.median(ratios)
    return result


# -- the parent: rounds of child processes ---------------------------------------------


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _child(contender: str, setting: str, args, weights_out: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(SETTINGS[setting])
    config = {
        "docs": args.docs, "steps": args.steps, "warmup": args.warmup,
        "batch_size": args.batch_size, "profile": args.profile, "weights_out": weights_out,
        "hide_torch": not args.with_torch,
    }  # fmt: skip
    command = [sys.executable, os.path.abspath(__file__), "--child", contender, json.dumps(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} ({setting}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _weight_diff(paths: dict) -> dict:
    import numpy as np

    with np.load(paths["thinc"]) as a, np.load(paths["mxopt"]) as b:
        if set(a.files) != set(b.files):
            return {"max_abs_weight_diff": None, "max_abs_weight": None}
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a.files if a[k].size)
        scale = max(float(np.abs(a[k]).max()) for k in a.files if a[k].size)
    return {"max_abs_weight_diff": diff, "max_abs_weight": scale}


def run(args) -> dict:
    settings = args.settings
    load_before = _load()
    run_start = time.perf_counter()
    samples: dict = {(s, c): [] for s in settings for c in CONTENDERS}
    diffs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            order = CONTENDERS if round_ % 2 == 0 else CONTENDERS[::-1]
            for setting in settings:
                paths = {c: os.path.join(tmp, f"{setting}-{c}.npz") for c in CONTENDERS}
                for contender in order:
                    keep = paths[contender] if round_ == 0 else None
                    result = _child(contender, setting, args, keep)
                    samples[(setting, contender)].append(result)
                    print(f"  round {round_ + 1} {setting:<10} {contender:<5} "
                          f"{result['seconds']:7.2f} s", file=sys.stderr, flush=True)  # fmt: skip
                if round_ == 0:
                    diffs[setting] = _weight_diff(paths)
    load_after = _load()
    cores = os.cpu_count() or 1
    # before the run, the load is other processes'; after it, the last minute includes this
    # run's own (one busy process at a time, plus mxopt's workers while they work)
    busy = (load_before is not None and load_before > cores - 1) or (
        load_after is not None and load_after > cores + 0.5
    )
    rows = []
    for setting in settings:
        medians = {}
        row = {"setting": setting, "env": SETTINGS[setting]}
        for contender in CONTENDERS:
            results = samples[(setting, contender)]
            seconds = [r["seconds"] for r in results]
            medians[contender] = statistics.median(seconds)
            row[contender] = {
                "median_s": medians[contender],
                "spread": max(seconds) / min(seconds),
                "seconds": seconds,
                "losses": results[0]["losses"],
                "loss_total": results[0]["loss_total"],
                "threads": results[0]["threads"],
                "import_s": [r["import_s"] for r in results],
                "setup_s": [r["setup_s"] for r in results],
                "warmup_s": [r["warmup_s"] for r in results],
            }
            if args.profile:
                row[contender]["profile"] = [r["profile"] for r in results]
        row["ratio_mxopt_over_thinc"] = medians["mxopt"] / medians["thinc"]
        row["loss_total_rel_diff"] = abs(
            row["mxopt"]["loss_total"] - row["thinc"]["loss_total"]
        ) / max(abs(row["thinc"]["loss_total"]), 1e-30)
        row.update(diffs.get(setting, {}))
        rows.append(row)
    from mxopt.cli.bench import machine_info

    return {
        "command": " ".join(["python benchmarks/bench_spacy.py", *args.argv]),
        "machine": machine_info(),
        "spacy": __import__("spacy").__version__,
        "config": {
            "pipes": ["tagger", "ner", "textcat"],
            "docs": args.docs,
            "steps": args.steps,
            "warmup": args.warmup,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "drop": 0.1,
            "optimizer": OPTIMIZER_SETTINGS,
            "torch_hidden": not args.with_torch,
        },  # fmt: skip
        "load": [load_before, load_after],
        "busy": busy,
        "total_s": time.perf_counter() - run_start,
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        "| threads | thinc s | mxopt s | mxopt / thinc | spread thinc, mxopt | "
        "warm-up s thinc, mxopt | final loss thinc | final loss mxopt | max abs weight diff |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        t, m = row["thinc"], row["mxopt"]
        spread = ", ".join(
            f"{s['spread']:.2f}{'~' if s['spread'] > NOISY_SPREAD else ''}" for s in (t, m)
        )
        diff = row.get("max_abs_weight_diff")
        lines.append(
            f"| {row['setting']} | {t['median_s']:.2f} | {m['median_s']:.2f} | "
            f"{row['ratio_mxopt_over_thinc']:.3f} | {spread} | "
            f"{statistics.median(t['warmup_s']):.1f}, {statistics.median(m['warmup_s']):.1f} | "
            f"{sum(t['losses'].values()):.3f} | {sum(m['losses'].values()):.3f} | "
            f"{'n/a' if diff is None else f'{diff:.1e}'} |"
        )
    if any("profile" in row["thinc"] for row in result["rows"]):
        lines += ["", "| threads | contender | step ms | optimizer calls ms | "
                  "step_schedules ms | rest ms | calls/step | us per call | "
                  "calls on >= 2^20 elements ms |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        steps = result["config"]["steps"]
        for row in result["rows"]:
            for contender in CONTENDERS:
                profiles = row[contender]["profile"]

                def med(key, profiles=profiles):
                    return statistics.median(p[key] for p in profiles)

                call, sched, rest = med("optimizer_call_s"), med("step_schedules_s"), med("rest_s")
                calls = med("calls_per_step")
                lines.append(
                    f"| {row['setting']} | {contender} | "
                    f"{(call + sched + rest) / steps * 1e3:.1f} | {call / steps * 1e3:.2f} | "
                    f"{sched / steps * 1e3:.3f} | {rest / steps * 1e3:.1f} | {calls:.0f} | "
                    f"{call / steps / calls * 1e6:.1f} | "
                    f"{med('large_call_s') / steps * 1e3:.2f} |"
                )
    load = ", ".join("n/a" if x is None else f"{x:.2f}" for x in result["load"])
    lines.append(
        f"\nLoad average (1 min) before, after: {load}; whole run {result['total_s']:.0f} s."
    )
    if result["busy"]:
        lines.append("NOT TRUSTWORTHY: the machine was busy (load above); rerun when it is idle.")
    return "\n".join(lines)


def _main_interleaved(args) -> int:
    if args.json.endswith("bench_spacy.json"):
        args.json = args.json[: -len(".json")] + "_interleaved.json"
    load_before = _load()
    result = interleaved(docs=args.docs, steps=args.steps, warmup=args.warmup,
                         batch_size=args.batch_size)  # fmt: skip
    result["load"] = [load_before, _load()]
    result["threads"] = _thread_info("mxopt")
    result["config"] = {"docs": args.docs, "steps": args.steps, "warmup": args.warmup,
                        "batch_size": args.batch_size, "drop": 0.1}  # fmt: skip
    from mxopt.cli.bench import machine_info

    result["machine"] = machine_info()
    result["command"] = " ".join(["python benchmarks/bench_spacy.py", *args.argv])
    print("machine: " + ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    print(
        "| contender | step ms | optimizer calls ms | rest ms | calls/step | "
        "calls on >= 2^20 elements ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for contender, row in result["contenders"].items():
        print(f"| {contender} | {row['step_ms']:.1f} | {row['optimizer_call_ms']:.2f} | "
              f"{row['rest_ms']:.1f} | {row['calls_per_step']:.0f} | "
              f"{row['large_call_ms']:.2f} |")  # fmt: skip
    load = ", ".join("n/a" if x is None else f"{x:.2f}" for x in result["load"])
    print(f"\nthreads: {result['threads']}; median per-step ratio mxopt/thinc: "
          f"{result['step_ratio_mxopt_over_thinc']:.3f}; load before, after: {load}")  # fmt: skip
    if result["load"][0] is not None and result["load"][0] > (os.cpu_count() or 1) - 1:
        print("The machine was busy: both contenders shared it alike, but the times are long.")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"saved {args.json}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        config = json.loads(argv[2])
        if config.pop("hide_torch"):
            sys.modules["torch"] = None  # Thinc then skips it (about 5 s of import per run)
        start = time.perf_counter()
        import spacy  # noqa: F401

        if argv[1] == "mxopt":
            import mxopt.thinc  # noqa: F401
        imported = time.perf_counter() - start
        result = train(argv[1], **config)
        result["import_s"] = imported
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Contenders: thinc.api.Adam and mxopt.thinc.Adam with spaCy's default "
        "optimizer settings; one child process per run.",
    )
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds (default 3; 1 with --profile)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--docs", type=int, default=1000, help="documents in the corpus")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--with-torch", action="store_true",
                        help="let Thinc import torch in the runs (off: about 5 s less per run; "
                        "these pipelines never use it)")  # fmt: skip
    parser.add_argument("--interleaved", action="store_true",
                        help="both contenders in one process, steps alternating (default "
                        "threads; saves bench_spacy_interleaved.json)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="time the optimizer's calls (wraps it in a timer)")  # fmt: skip
    parser.add_argument(
        "--json",
        default=os.path.join(os.path.dirname(__file__), "results", "bench_spacy.json"),
        help="where to save every figure (default: benchmarks/results/bench_spacy.json; "
        "with --profile: bench_spacy_profile.json beside it)",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    if args.repeats is None:
        args.repeats = 1 if args.profile else 3
    if args.interleaved and not args.with_torch and "torch" not in sys.modules:
        sys.modules["torch"] = None  # as in the child processes
    try:
        import spacy  # noqa: F401
    except ImportError:
        print("bench_spacy needs spaCy: pip install spacy", file=sys.stderr)
        return 1
    if args.profile and args.json.endswith("bench_spacy.json"):
        args.json = args.json[: -len(".json")] + "_profile.json"
    if args.interleaved:
        return _main_interleaved(args)
    result = run(args)
    info = result["machine"]
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"spaCy {result['spacy']}; " + ", ".join(f"{k}={v}" for k, v in result["config"].items()))
    print(table(result))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
