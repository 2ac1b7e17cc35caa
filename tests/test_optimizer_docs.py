"""The optimizer reference is generated from the optimizer table, covers every optimizer,
and its numbers are true.

The tables of docs/optimizers.md and docs/optimizers/*.md are made when the site is built,
by the mkdocs hook ``docs/_ext/generated.py``, from ``mxopt.OPTIMIZERS`` (each class's
docstring, ``Options`` and ``about``) and from the oracle files' declarations. This checks
what the hook makes and what it reads:

* every optimizer of ``mxopt.OPTIMIZERS`` has an ``about`` of its own with a known family,
  whose page asks for the family's reference (its docstring); ``Ranger`` (a factory, not
  in the table) is on the wrappers page;
* every docstring starts with its one-line summary, then its signature with the real
  defaults;
* the memory table: every row's arrays and bytes per parameter are the ones worked out by
  hand below, every optimizer has a row, and each docstring's "State:" paragraph names the
  default arrays ``create_state`` makes and gives their bytes per float32 parameter;
* the convergence table has one row per setting and is exactly what
  ``tests/test_convergence.py`` prints;
* the torch table lists every case of ``TORCH_CASES``, each measured within its tolerance;
* :func:`render` replaces every marker, and every marker of the pages is a known one;
* the Python examples of the optimizer pages run.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import pathlib
import re

import numpy as np
import pytest

import mxopt
from mxopt.optimizers.base import About
from tests import test_convergence
from tests.reference import CONVERGENCE, OPTAX_CASES, TORCH_CASES

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [DOCS / "optimizers.md", DOCS / "choosing.md", *sorted((DOCS / "optimizers").glob("*.md"))]
NAMES = [*mxopt.OPTIMIZERS, "Ranger"]
SHAPE = (64, 32)


def _load_hook():
    spec = importlib.util.spec_from_file_location("generated", DOCS / "_ext" / "generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generated = _load_hook()


def _object(name: str):
    return mxopt.Ranger if name == "Ranger" else mxopt.OPTIMIZERS[name]


def _doc(name: str) -> str:
    obj = _object(name)
    own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    assert own, f"{name} has no docstring of its own"
    return inspect.cleandoc(own)


def _paragraphs(doc: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]


def _rows(table: str) -> list[list[str]]:
    """The body rows of a Markdown table, as lists of stripped cells."""
    lines = table.strip().splitlines()
    assert len(lines) >= 2 and set(lines[1]) <= set("|-:"), table[:200]
    return [[cell.strip() for cell in line.strip()[1:-1].split("|")] for line in lines[2:]]


# -- every optimizer is documented, on its family's page -----------------------------------


@pytest.mark.parametrize("name", list(mxopt.OPTIMIZERS))
def test_every_optimizer_has_an_about_with_a_known_family(name):
    cls = mxopt.OPTIMIZERS[name]
    about = cls.__dict__.get("about")  # its own: a subclass must not inherit its parent's
    assert isinstance(about, About), f"{name} has no `about = About(...)` of its own"
    assert about.family in generated.FAMILIES, f"{name}: unknown family {about.family!r}"
    assert name in generated.optimizers_of(about.family)
    assert f"::: mxopt.{name}" in generated.family_reference(about.family).splitlines()
    assert about.same_as and about.weight_decay, f"{name}: say what it reproduces and decays"
    assert about.examples, f"{name}: the memory table needs at least one example"
    if name != "Lookahead":  # it cannot be built without an inner optimizer
        assert about.examples[0] == {}, f"{name}: the family table shows the defaults first"


def test_the_families_cover_the_table_once():
    listed = [name for family in generated.FAMILIES for name in generated.optimizers_of(family)]
    assert sorted(listed) == sorted(mxopt.OPTIMIZERS)


@pytest.mark.parametrize("family", list(generated.FAMILIES))
def test_family_page_asks_for_its_table_and_reference(family):
    _, page = generated.FAMILIES[family]
    lines = (DOCS / page).read_text().splitlines()
    assert f"<!-- mxopt:family-reference {family} -->" in lines, page
    assert f"<!-- mxopt:family-table {family} -->" in lines, page


def test_ranger_is_on_the_wrappers_page():
    _, page = generated.FAMILIES["wrappers"]
    lines = (DOCS / page).read_text().splitlines()
    assert "::: mxopt.Ranger" in lines
    assert "Ranger" not in mxopt.OPTIMIZERS  # a factory: nothing generates its reference


def test_every_marker_of_the_pages_is_known():
    """A misspelt marker name would stop the build; a misspelt family would render an empty
    table."""
    for page in [*PAGES, DOCS / "api" / "optimizers.md"]:
        for line in page.read_text().splitlines():
            if "mxopt:" not in line or not line.startswith("<!--"):
                continue
            match = generated.MARKER.fullmatch(line)
            assert match, f"{page.name}: malformed marker {line!r}"
            assert match["name"] in generated.GENERATORS, f"{page.name}: {line}"
            if match["name"].startswith("family-"):
                assert match["argument"] in generated.FAMILIES, f"{page.name}: {line}"


# -- the signature line --------------------------------------------------------------------


def _documented_signature(name: str, doc: str) -> list[tuple]:
    """``[(parameter, kind, default)]`` of the ````Name(...)```` paragraph that must follow
    the summary line of ``doc``."""
    paragraphs = _paragraphs(doc)
    assert len(paragraphs) >= 2 and not paragraphs[0].startswith("``"), (
        f"{name}: the docstring must start with a one-line summary"
    )
    assert "\n" not in paragraphs[0], f"{name}: the summary is one line"
    match = re.fullmatch(rf"``{re.escape(name)}(\(.*\))``", paragraphs[1], flags=re.S)
    assert match, f"{name}: the paragraph after the summary must be ``{name}(...)``"
    tree = ast.parse(f"def f{' '.join(match[1].split())}: pass")
    args = tree.body[0].args
    found = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + args.defaults
    for arg, default in zip(positional, defaults, strict=True):
        value = inspect.Parameter.empty if default is None else ast.literal_eval(default)
        found.append((arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, value))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        value = inspect.Parameter.empty if default is None else _default_value(default)
        found.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, value))
    if args.kwarg is not None:
        found.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty))
    return found


def _default_value(node):
    """A literal, or a call without arguments of an optimizer (Muon's ``fallback=AdamW()``)."""
    if isinstance(node, ast.Call) and not node.args and not node.keywords:
        return mxopt.OPTIMIZERS[node.func.id]()
    return ast.literal_eval(node)


def _real_signature(obj) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def _same_signature(documented: list[tuple], real: list[tuple]) -> bool:
    return len(documented) == len(real) and all(
        d[:2] == r[:2] and type(d[2]) is type(r[2]) and d[2] == r[2]
        for d, r in zip(documented, real, strict=True)
    )


@pytest.mark.parametrize("name", NAMES)
def test_docstring_shows_the_signature(name):
    documented = _documented_signature(name, _doc(name))
    real = _real_signature(_object(name))
    assert _same_signature(documented, real), (
        f"{name}: the docstring shows {documented}, the signature is {real}"
    )


def test_the_signature_check_can_fail():
    doc = _doc("ADAM")
    real = _real_signature(mxopt.ADAM)
    assert _same_signature(_documented_signature("ADAM", doc), real)
    for wrong in (
        doc.replace("lr=1e-3", "lr=1e-2", 1),  # a default
        doc.replace("epsilon=1e-8", "epsilon=1", 1),  # a type
        doc.replace("amsgrad=False,", "", 1),  # a missing option
        doc.replace("*, lr=", "lr=", 1),  # positional
    ):
        assert wrong != doc
        assert not _same_signature(_documented_signature("ADAM", wrong), real)


# -- memory ---------------------------------------------------------------------------------

W = SHAPE
#: Worked out by hand from each optimizer's definition, not from ``create_state``: the state
#: arrays of one (64, 32) float32 weight (name: shape) and the bytes per parameter, 4 per
#: float32 array shaped like the weight. Adafactor keeps a row and a column of its
#: factored second moment: 4 * (64 + 32) / (64 * 32) = 0.1875 bytes.
EXPECTED_MEMORY = {
    "AdaBelief()": ({"mean": W, "var": W}, 8),
    "AdaDelta()": ({"acc": W, "delta_acc": W}, 8),
    "Adafactor()": ({"row_var": (64, 1), "col_var": (1, 32)}, 0.1875),
    "AdaGrad()": ({"history": W}, 4),
    "ADAM()": ({"mean": W, "var": W}, 8),
    "ADAM(amsgrad=True)": ({"mean": W, "var": W, "max_var": W}, 12),
    "AdaMax()": ({"mean": W, "inf_norm": W}, 8),
    "AdamW()": ({"mean": W, "var": W}, 8),
    "AdamW(amsgrad=True)": ({"mean": W, "var": W, "max_var": W}, 12),
    "ADOPT()": ({"mean": W, "var": W}, 8),
    "Adan()": ({"mean": W, "diff_mean": W, "var": W, "prev_grad": W}, 16),
    "AdEMAMix()": ({"mean": W, "slow_mean": W, "var": W}, 12),
    "ASGD()": ({"ax": W}, 4),
    "LAMB()": ({"mean": W, "var": W}, 8),
    "LARS()": ({"velocity": W}, 4),
    # 2 m rows of the weight's size, 2 arrays shaped like it, m + 4 scalars (m = 100, 10)
    "LBFGS()": (
        {
            "s_history": (100, 2048),
            "y_history": (100, 2048),
            "rho": (100,),
            "prev_grad": W,
            "last_step": W,
            "info": (4,),
        },
        808.203125,
    ),
    "LBFGS(history_size=10)": (
        {
            "s_history": (10, 2048),
            "y_history": (10, 2048),
            "rho": (10,),
            "prev_grad": W,
            "last_step": W,
            "info": (4,),
        },
        88.02734375,
    ),
    "Lion()": ({"mean": W}, 4),
    "Muon()": ({"momentum_buffer": W}, 4),
    # m, v like the weight; L, Q_L 64 x 64; R, Q_R 32 x 32:
    # 4 * (2 * 2048 + 2 * 4096 + 2 * 1024) / 2048 = 28 bytes
    "SOAP()": (
        {
            "exp_avg": W,
            "exp_avg_sq": W,
            "precond_left": (64, 64),
            "basis_left": (64, 64),
            "precond_right": (32, 32),
            "basis_right": (32, 32),
        },
        28,
    ),
    "Lookahead(inner=SGD(momentum=0.9))": ({"velocity": W, "lookahead_slow": W}, 8),
    "Lookahead(inner=RAdam())": ({"mean": W, "var": W, "lookahead_slow": W}, 12),
    "Nadam()": ({"mean": W, "var": W}, 8),
    "Prodigy()": ({"mean": W, "var": W, "grad_sum": W, "initial": W}, 16),
    "QHAdam()": ({"mean": W, "var": W}, 8),
    "RAdam()": ({"mean": W, "var": W}, 8),
    "RMSProp()": ({"square_avg": W}, 4),
    "RMSProp(centered=True)": ({"square_avg": W, "grad_avg": W}, 8),
    "RMSProp(momentum=0.9)": ({"square_avg": W, "velocity": W}, 8),
    "RMSProp(centered=True, momentum=0.9)": (
        {"square_avg": W, "grad_avg": W, "velocity": W},
        12,
    ),
    "Rprop()": ({"prev": W, "step_size": W}, 8),
    "ScheduleFreeAdamW()": ({"z": W, "x": W, "var": W}, 12),
    "ScheduleFreeSGD()": ({"z": W, "x": W}, 8),
    "SGD()": ({}, 0),
    "SGD(momentum=0.9)": ({"velocity": W}, 4),
    "SparseAdam()": ({"mean": W, "var": W}, 8),
    "SGD(), averaging=EMA()": ({"average": W}, 4),
    "ADAM(), averaging=Polyak()": ({"mean": W, "var": W, "average": W}, 12),
}


def test_memory_rows_are_the_hand_computed_ones():
    assert generated.MEMORY_SHAPE == SHAPE
    rows = generated.memory_rows()
    calls = [call for call, _, _ in rows]
    assert len(set(calls)) == len(calls), "a row is shown twice"
    assert sorted(calls) == sorted(EXPECTED_MEMORY), (
        f"rows without a hand-computed expectation: {sorted(set(calls) - set(EXPECTED_MEMORY))}; "
        f"expectations without a row: {sorted(set(EXPECTED_MEMORY) - set(calls))}"
    )
    for call, arrays, per_parameter in rows:
        names = [name for name, _ in arrays]
        assert len(set(names)) == len(names), call
        expected_arrays, expected_bytes = EXPECTED_MEMORY[call]
        assert dict(arrays) == expected_arrays, call
        assert per_parameter == expected_bytes, (
            f"{call}: the table says {per_parameter} bytes per parameter, {expected_bytes} expected"
        )


def test_memory_table_shows_the_rows():
    table = generated.memory_table()
    rows = _rows(table)
    assert [row[0] for row in rows] == [f"`{call}`" for call, _, _ in generated.memory_rows()]
    shown = {row[0].strip("`"): row for row in rows}
    assert shown["SGD()"][1:] == ["none", "0"]
    assert shown["Adafactor()"][1:] == ["`row_var` (64, 1), `col_var` (1, 32)", "0.1875"]
    assert shown["ADAM(amsgrad=True)"][1:] == ["`mean`, `var`, `max_var`", "12"]


def test_memory_table_covers_every_optimizer():
    calls = [call for call, _, _ in generated.memory_rows()]
    covered = {re.match(r"(\w+)\(", call)[1] for call in calls}
    assert set(mxopt.OPTIMIZERS) <= covered, sorted(set(mxopt.OPTIMIZERS) - covered)
    for name in mxopt.OPTIMIZERS:
        if name != "Lookahead":  # it cannot be built without an inner optimizer
            assert f"{name}()" in calls, f"no row for {name}() in the memory table"


@pytest.mark.parametrize("name", list(mxopt.OPTIMIZERS))
def test_memory_examples_keep_the_weights_dtype(name):
    """The table counts 4 bytes per element: every array is float32 like the weight."""
    cls = mxopt.OPTIMIZERS[name]
    weight = np.zeros(SHAPE, np.float32)
    for options in cls.about.examples:
        state = mxopt.create_state(cls(**generated.example_options(options)), 0, weight)
        for array_name, array in state.arrays.items():
            assert array.dtype == np.float32, (name, options, array_name)


def _state_statement(doc: str) -> tuple[list[str], float]:
    """The array names and the bytes per float32 parameter that the docstring's "State:"
    paragraph gives first (what the defaults keep)."""
    paragraphs = [p for p in _paragraphs(doc) if p.startswith("State:")]
    assert len(paragraphs) == 1, 'the docstring needs one paragraph starting with "State:"'
    text = " ".join(paragraphs[0].split())
    match = re.search(r"(\d+(?:\.\d+)?) bytes per float32 parameter", text)
    assert match, 'the "State:" paragraph gives no "N bytes per float32 parameter"'
    names = re.findall(r'``"(\w+)"``', text[: match.start()])
    return names, float(match[1])


def _default_state(name: str) -> tuple[set, float]:
    weight = np.zeros(SHAPE, np.float32)

    def state(optimizer):
        arrays = mxopt.create_state(optimizer, 0, weight).arrays
        return set(arrays), sum(a.nbytes for a in arrays.values()) / weight.size

    if name == "Lookahead":  # what it adds to the optimizer it wraps
        (wrapped, wrapped_bytes), (inner, inner_bytes) = (
            state(mxopt.Lookahead(mxopt.SGD())),
            state(mxopt.SGD()),
        )
        return wrapped - inner, wrapped_bytes - inner_bytes
    return state(_object(name)())


@pytest.mark.parametrize("name", NAMES)
def test_docstring_states_the_default_state(name):
    """Each docstring's "State:" paragraph starts with the arrays of the defaults and their
    bytes per float32 parameter (for Lookahead: what it adds to the inner optimizer's)."""
    names, per_parameter = _state_statement(_doc(name))
    allocated, allocated_bytes = _default_state(name)
    assert len(set(names)) == len(names) and set(names) == allocated, (
        f"{name}: the docstring names {names}, create_state makes {sorted(allocated)}"
    )
    assert per_parameter == allocated_bytes, (
        f"{name}: the docstring says {per_parameter} bytes per parameter, "
        f"create_state allocates {allocated_bytes}"
    )


def test_the_state_check_can_fail():
    doc = _doc("ADAM")
    assert _state_statement(doc) == (["mean", "var"], 8.0)
    names, per_parameter = _state_statement(doc.replace("8 bytes", "12 bytes", 1))
    assert per_parameter == 12.0
    names, _ = _state_statement(doc.replace('``"var"``', '``"variance"``', 1))
    assert names == ["mean", "variance"]
    with pytest.raises(AssertionError):
        _state_statement(doc.replace("State:", "Keeps:"))


# -- convergence and torch tables -----------------------------------------------------------


def test_convergence_table_is_the_tests():
    table = generated.convergence_table()
    assert table == test_convergence.markdown()
    rows = _rows(table)
    assert [row[0] for row in rows] == [setting.label for setting in CONVERGENCE]
    assert [row[1] for row in rows] == [f"`{setting.call}`" for setting in CONVERGENCE]
    assert "<!-- mxopt:convergence-table -->" in (DOCS / "optimizers.md").read_text()


def _call(name: str, options: dict) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


def test_torch_table_lists_every_case():
    measured = json.loads(generated.TORCH_RESULTS.read_text())
    assert set(measured) == {case.label for case in TORCH_CASES}, (
        "run `PYTHONPATH=. python tests/torch_agreement.py --json "
        "docs/_data/torch_agreement.json` after changing the torch cases"
    )
    rows = _rows(generated.torch_table())
    assert len(rows) == len(TORCH_CASES)
    for (label, call, torch_call, deviation, tolerance), case in zip(
        rows, TORCH_CASES, strict=True
    ):
        assert label == case.label
        assert call == f"`{_call(case.mxopt_name, case.mxopt_options)}`"
        assert torch_call == f"`{_call(case.torch_name, case.torch_options)}`"
        assert float(tolerance) == case.tolerance
        assert 0 <= float(deviation) <= case.tolerance, case.label
    assert "<!-- mxopt:torch-table -->" in (DOCS / "optimizers.md").read_text()


def test_step_cost_table_measures_every_optimizer():
    result = json.loads(generated.STEP_COST_RESULTS.read_text())
    measured = {call.split("(")[0] for call in result["rows"]}
    assert measured | set(result["skipped"]) == set(mxopt.OPTIMIZERS), (
        "run `NUMBA_NUM_THREADS=1 MXOPT_NUM_THREADS=1 python benchmarks/bench_step_cost.py "
        "--json docs/_data/step_cost.json` after adding an optimizer"
    )
    table, footer = generated.step_cost_table().split("\n\n")
    assert result["baseline"] in footer and len(_rows(table)) == len(result["rows"])
    assert "<!-- mxopt:step-cost-table -->" in (DOCS / "choosing.md").read_text()


def test_optax_table_lists_every_case():
    measured = json.loads(generated.OPTAX_RESULTS.read_text())
    assert set(measured) == {case.label for case in OPTAX_CASES}, (
        "run `PYTHONPATH=. python tests/optax_agreement.py --json "
        "docs/_data/optax_agreement.json` after changing the optax cases"
    )
    rows = _rows(generated.optax_table())
    assert len(rows) == len(OPTAX_CASES)
    for (label, call, optax_call, deviation, tolerance), case in zip(
        rows, OPTAX_CASES, strict=True
    ):
        assert label == case.label
        assert call == f"`{_call(case.mxopt_name, case.mxopt_options)}`"
        assert optax_call == f"`{_call('optax.' + case.optax_name, case.optax_options)}`"
        assert float(tolerance) == case.tolerance
        assert 0 <= float(deviation) <= case.tolerance, case.label
    assert "<!-- mxopt:optax-table -->" in (DOCS / "optimizers.md").read_text()


# -- the hook --------------------------------------------------------------------------------


def test_render_replaces_every_marker():
    page = "\n\n".join(
        [
            "# A page",
            "<!-- mxopt:family-table adam-family -->",
            "<!-- mxopt:family-reference others -->",
            "<!-- mxopt:families -->",
            "<!-- mxopt:memory-table -->",
            "<!-- mxopt:convergence-table -->",
            "<!-- mxopt:torch-table -->",
            "<!-- mxopt:optax-table -->",
            "Inline, <!-- mxopt:families --> is text.",
        ]
    )
    out = generated.render(page, "api/optimizers.md")
    assert out.startswith("# A page\n\n| optimizer | defaults | weight decay |")
    assert "Inline, <!-- mxopt:families --> is text." in out
    assert out.count("<!-- mxopt:") == 1
    # family-table: every optimizer of the family, and only those
    family_table = out.split("\n\n")[1]
    assert "| [`ADAM`][mxopt.ADAM] | `lr=0.001, beta1=0.9, beta2=0.999" in family_table
    assert "| `mean`, `var` | MXNet.jl's `ADAM`;" in family_table
    for name in mxopt.OPTIMIZERS:
        shown = f"| [`{name}`][mxopt.{name}] |" in family_table
        assert shown == (mxopt.OPTIMIZERS[name].about.family == "adam-family"), name
    # family-reference
    for name in ("LARS", "Rprop", "ASGD"):
        assert f"\n::: mxopt.{name}\n" in out
    assert "::: mxopt.ADAM" not in out
    # families, memory, convergence, torch
    assert "| [Adam family](../optimizers/adam-family.md) | [`ADAM`][mxopt.ADAM]" in out
    assert "| `ADAM(amsgrad=True)` | `mean`, `var`, `max_var` | 12 |" in out
    assert "| `SGD(), averaging=EMA()` | `average` | 4 |" in out
    assert "| optimizer | mxopt settings | Rosenbrock budget |" in out
    assert "| SGD momentum | `SGD(lr=0.05, momentum=0.9, weight_decay=0.001)` |" in out


def test_an_unknown_family_has_no_optimizers():
    assert generated.optimizers_of("no-such-family") == []
    assert generated.family_reference("no-such-family") == ""
    assert len(generated.family_table("no-such-family").splitlines()) == 2  # the header
    assert generated.optimizers_of("adam-family")  # the lookup itself works


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_pages_render_without_markers(page):
    out = generated.render(page.read_text(), page.relative_to(DOCS).as_posix())
    assert not re.search(r"^<!-- mxopt:", out, flags=re.M)


# -- examples --------------------------------------------------------------------------------


def _python_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    # a signature shown for reference, ``Name(*, a=1, ...)``, is not run
    return [b for b in blocks if not re.fullmatch(r"[A-Za-z_][\w.]*\(\s*\*\s*,.*\)\s*", b, re.S)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_examples_run(page, tmp_path, monkeypatch):
    """The examples of a page run in order, in one namespace (a page's later blocks use
    what its first ones defined)."""
    blocks = _python_blocks(page.read_text())
    assert blocks, f"{page.name} has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_example"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
