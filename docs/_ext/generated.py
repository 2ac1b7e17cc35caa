"""The parts of the documentation made from the optimizer table, at build time (an mkdocs hook).

A page asks for a generated part with a marker on a line of its own::

    <!-- mxopt:family-table adam-family -->     the comparison table of a family
    <!-- mxopt:family-reference adam-family --> every optimizer of the family (its docstring)
    <!-- mxopt:families -->                     family -> optimizers, with links
    <!-- mxopt:memory-table -->                 state allocated per parameter
    <!-- mxopt:convergence-table -->            tests/test_convergence.py's runs
    <!-- mxopt:torch-table -->                  the pairings with torch.optim

Everything comes from ``mxopt.OPTIMIZERS`` (each class's docstring, ``Options`` and
``about``) and from the oracle files' declarations (``tests/reference``), so adding an
optimizer adds it to every page. :func:`render` is plain Python (tested in
``tests/test_optimizer_docs.py``); mkdocs.yml loads this file under ``hooks:``.
"""

from __future__ import annotations

import json
import pathlib
import posixpath
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- mxopt:(?P<name>[a-z-]+)(?: (?P<argument>[\w-]+))? -->$", re.M)

#: The family pages of the optimizer reference, in the order of the navigation.
FAMILIES = {
    "sgd": ("SGD and momentum", "optimizers/sgd.md"),
    "adam-family": ("Adam family", "optimizers/adam-family.md"),
    "adaptive": ("Adaptive methods", "optimizers/adaptive.md"),
    "others": ("LARS, Rprop, ASGD", "optimizers/others.md"),
    "recent": ("Recent optimizers", "optimizers/recent.md"),
    "wrappers": ("Lookahead, Ranger, averaging", "optimizers/wrappers.md"),
}

#: The example weight of the memory table.
MEMORY_SHAPE = (64, 32)

#: Measured deviations from torch.optim (``python tests/torch_agreement.py --json``).
TORCH_RESULTS = ROOT / "docs" / "_data" / "torch_agreement.json"
#: Measured time per step and state of every optimizer
#: (``python benchmarks/bench_step_cost.py --json``).
STEP_COST_RESULTS = ROOT / "docs" / "_data" / "step_cost.json"
#: Measured deviations from optax (``python tests/optax_agreement.py --json``).
OPTAX_RESULTS = ROOT / "docs" / "_data" / "optax_agreement.json"

_SHARED = ("grad_clip", "grad_scale", "maximize", "lr_scheduler", "momentum_scheduler")


def _table():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the oracle files' declarations live in tests/
    import mxopt

    return mxopt


def optimizers_of(family: str) -> list[str]:
    """The names of the optimizers of ``family``, by name."""
    mxopt = _table()
    names = [name for name, cls in mxopt.OPTIMIZERS.items() if cls.about.family == family]
    return sorted(names, key=str.lower)


def example_options(options: dict) -> dict:
    """An example's options, with the values given as functions made (a wrapped optimizer)."""
    return {k: v() if callable(v) else v for k, v in options.items()}


def _default(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def defaults(cls) -> str:
    """``lr=0.001, beta1=0.9, ...``: the optimizer's own numeric options and its decay."""
    import attrs

    parts = []
    for field in attrs.fields(cls.Options):
        numeric = "interval" in field.metadata or "integer_ge" in field.metadata
        if field.name in _SHARED or not numeric:
            continue
        parts.append(f"{field.name}={_default(field.default)}")
    return ", ".join(parts)


def state_names(optimizer, shape=MEMORY_SHAPE, averaging=None) -> list[tuple[str, tuple]]:
    """``[(name, shape)]`` of the state arrays ``create_state`` makes for a float32 weight."""
    import numpy as np

    mxopt = _table()
    state = mxopt.create_state(optimizer, 0, np.zeros(shape, np.float32), averaging=averaging)
    return [(name, array.shape) for name, array in state.arrays.items()]


def short_repr(value) -> str:
    """An option value as a user writes it: an optimizer shows only the options it sets."""
    import attrs

    mxopt = _table()
    if isinstance(value, mxopt.AbstractOptimizer):
        options = {
            f.name: getattr(value.opts, f.name)
            for f in attrs.fields(type(value.opts))
            if getattr(value.opts, f.name) != f.default
        }
        return _call(type(value).__name__, options)
    return repr(value)


def _call(name: str, options: dict) -> str:
    return f"{name}({', '.join(f'{k}={short_repr(v)}' for k, v in options.items())})"


def family_table(family: str) -> str:
    mxopt = _table()
    lines = [
        "| optimizer | defaults | weight decay | epsilon | state | same update as |",
        "|---|---|---|---|---|---|",
    ]
    for name in optimizers_of(family):
        cls = mxopt.OPTIMIZERS[name]
        about = cls.about
        optimizer = cls(**example_options(about.examples[0]))
        state = ", ".join(f"`{n}`" for n, _ in state_names(optimizer)) or "none"
        lines.append(
            f"| [`{name}`][mxopt.{name}] | `{defaults(cls)}` | {about.weight_decay} | "
            f"{about.epsilon or 'none'} | {state} | {about.same_as} |"
        )
    return "\n".join(lines)


def family_reference(family: str) -> str:
    return "\n\n".join(f"::: mxopt.{name}" for name in optimizers_of(family))


def families(page: str = "api/optimizers.md") -> str:
    """The family pages and their optimizers; links relative to ``page`` (the page
    the table is on, from the docs folder)."""
    here = posixpath.dirname(page)
    lines = ["| family | classes |", "|---|---|"]
    for family, (title, target) in FAMILIES.items():
        names = ", ".join(f"[`{n}`][mxopt.{n}]" for n in optimizers_of(family))
        lines.append(f"| [{title}]({posixpath.relpath(target, here or '.')}) | {names} |")
    return "\n".join(lines)


def _bytes_per_parameter(arrays, itemsize: int = 4) -> float:
    size = MEMORY_SHAPE[0] * MEMORY_SHAPE[1]
    total = 0
    for _, shape in arrays:
        count = 1
        for extent in shape:
            count *= extent
        total += count
    return total * itemsize / size


def memory_rows() -> list[tuple[str, list, float]]:
    """``(call, [(array, shape)], bytes per parameter)`` for every optimizer's examples and
    the two averaging rules."""
    mxopt = _table()
    rows = []
    for name in sorted(mxopt.OPTIMIZERS, key=str.lower):
        cls = mxopt.OPTIMIZERS[name]
        for options in cls.about.examples:
            options = example_options(options)
            arrays = state_names(cls(**options))
            rows.append((_call(name, options), arrays, _bytes_per_parameter(arrays)))
    for call, optimizer, averaging in (
        ("SGD(), averaging=EMA()", mxopt.SGD(), mxopt.EMA()),
        ("ADAM(), averaging=Polyak()", mxopt.ADAM(), mxopt.Polyak()),
    ):
        arrays = state_names(optimizer, averaging=averaging)
        rows.append((call, arrays, _bytes_per_parameter(arrays)))
    return rows


def memory_table() -> str:
    lines = [
        "| state for | arrays (shaped like the weight unless a shape is given) "
        "| bytes per parameter |",
        "|---|---|---|",
    ]
    for call, arrays, per_parameter in memory_rows():
        names = ", ".join(
            f"`{n}`" + ("" if shape == MEMORY_SHAPE else f" {shape}") for n, shape in arrays
        )
        lines.append(f"| `{call}` | {names or 'none'} | {per_parameter:g} |")
    return "\n".join(lines)


def convergence_table() -> str:
    _table()
    from tests import test_convergence

    return test_convergence.markdown()


def _peer_table(peer: str, cases, results: pathlib.Path, peer_call) -> str:
    measured = json.loads(results.read_text()) if results.exists() else {}
    lines = [
        f"| case | mxopt (`batch_size=1`) | {peer} | max abs deviation | tolerance |",
        "|---|---|---|---:|---:|",
    ]
    for case in cases:
        deviation = measured.get(case.label)
        shown = "" if deviation is None else f"{deviation:.2e}"
        lines.append(
            f"| {case.label} | `{_call(case.mxopt_name, case.mxopt_options)}` | "
            f"`{peer_call(case)}` | {shown} | {case.tolerance:g} |"
        )
    return "\n".join(lines)


def torch_table() -> str:
    _table()
    from tests.reference import TORCH_CASES

    return _peer_table(
        "torch.optim", TORCH_CASES, TORCH_RESULTS,
        lambda case: _call(case.torch_name, case.torch_options),
    )  # fmt: skip


def optax_table() -> str:
    _table()
    from tests.reference import OPTAX_CASES

    return _peer_table(
        "optax", OPTAX_CASES, OPTAX_RESULTS,
        lambda case: _call(f"optax.{case.optax_name}", case.optax_options),
    )  # fmt: skip


def step_cost_table() -> str:
    """Time per step (relative to SGD with momentum) and state bytes per parameter, as
    ``benchmarks/bench_step_cost.py`` measured them."""
    result = json.loads(STEP_COST_RESULTS.read_text())
    shape = " x ".join(map(str, result["shape"]))
    lines = [
        f"| optimizer | time per step, x `{result['baseline']}` | state, bytes per parameter |",
        "|---|---:|---:|",
    ]
    rows = sorted(result["rows"].items(), key=lambda item: item[1]["ratio"])
    for call, row in rows:
        lines.append(f"| `{call}` | {row['ratio']:.2f} | {row['bytes_per_parameter']:.3g} |")
    skipped = "; ".join(f"`{name}`: {why}" for name, why in result["skipped"].items())
    lines.append("")
    lines.append(
        f"One float32 weight of {shape}, median of {result['repeats']} steps each, one "
        f"thread; {result['baseline']} took {result['rows'][result['baseline']]['ms']:.2f} ms. "
        f"Not measured: {skipped}."
    )
    return "\n".join(lines)


GENERATORS = {
    "family-table": family_table,
    "family-reference": family_reference,
    "families": families,
    "memory-table": memory_table,
    "convergence-table": convergence_table,
    "torch-table": torch_table,
    "optax-table": optax_table,
    "step-cost-table": step_cost_table,
}


def render(markdown: str, page: str = "index.md") -> str:
    """``markdown`` (of ``page``, a path in the docs folder) with every marker replaced
    by what it asks for."""

    def replace(match: re.Match) -> str:
        name, argument = match["name"], match["argument"]
        if name == "families":
            return families(page)
        return GENERATORS[name](argument) if argument else GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files):  # the mkdocs hook
    return render(markdown, page.file.src_uri)
