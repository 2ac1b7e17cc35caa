"""The documentation site: its code runs, every public name is documented, it builds strictly.

* Every ```` ```python ```` block of every page under ``docs/`` runs, page by page in one
  namespace. A block whose first line is ``# requires: torch`` (or ``thinc``,
  ``fastai``, ... comma-separated) runs only when those modules are importable; a block
  whose first line is ``# other library`` is shown for comparison and never run, and so
  is a block that is only a signature (``SGD(*, lr=0.01, ...)``). Each page also runs
  once without any ``requires`` block, so the mxopt-only code never depends on another
  library's.
* Every name in ``mxopt.__all__``, ``mxopt.LearningRate.__all__`` and
  ``mxopt.Momentum.__all__`` has a ``::: mxopt.<name>`` block on a docs page (the API
  reference and the optimizer family pages), exactly once, and a docstring.
* ``mkdocs build --strict`` passes (skipped when the ``docs`` extra is not installed), and
  the site works offline (``tests/test_docs_offline.py``'s ``check_offline_site``).
"""

from __future__ import annotations

import ast
import html
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

import mxopt
from tests.test_docs_offline import check_offline_site

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.relative_to(DOCS).parts)
DIRECTIVE = re.compile(r"^:::\s+(?P<identifier>[\w.]+)\s*$")


# -- code blocks --------------------------------------------------------------------------


def python_blocks(path: pathlib.Path) -> list[dict]:
    """The ```` ```python ```` blocks of a page: code, first line, requirements."""
    blocks, current, indent, start = [], None, 0, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if current is None:
            if line.strip() == "```python":
                current, indent, start = [], len(line) - len(line.lstrip()), number
        elif line.strip() == "```":
            code = "\n".join(
                text[indent:] if not text[:indent].strip() else text.lstrip() for text in current
            )
            blocks.append(_describe(code, start))
            current = None
        else:
            current.append(line)
    assert current is None, f"{path}: unclosed code block at line {start}"
    return blocks


def _describe(code: str, line: int) -> dict:
    first = next((text.strip() for text in code.splitlines() if text.strip()), "")
    requires: tuple[str, ...] = ()
    # "# other library: ...", or "# file: path" (a file's content, shown, not run here)
    other = first.lower().startswith(("# other library", "# file:"))
    # A signature shown for reference, ``Name(*, a=1, ...)``, is not Python: shown, not run.
    signature = re.fullmatch(r"[A-Za-z_][\w.]*\(.*\)", code.strip(), re.S)
    if signature and re.search(r"[(,]\s*\*\s*[,)]", code):
        other = True
    match = re.match(r"#\s*requires:\s*(?P<modules>.+)$", first)
    if match:
        requires = tuple(m.strip() for m in match["modules"].split(",") if m.strip())
    if "plot_schedules(" in code and "matplotlib" not in requires:
        requires += ("matplotlib",)
    return {"code": code, "line": line, "requires": requires, "other": other}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _page_id(path: pathlib.Path) -> str:
    return str(path.relative_to(DOCS))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
@pytest.mark.parametrize("mode", ["mxopt-only", "with-other-libraries"])
def test_page_code_runs(page, mode, tmp_path, monkeypatch):
    blocks = [b for b in python_blocks(page) if not b["other"]]
    if mode == "with-other-libraries":
        if not any(b["requires"] for b in blocks):
            pytest.skip("no block needs another library")
        missing = {m for b in blocks for m in b["requires"] if not _importable(m)}
        if missing:
            pytest.skip(f"not installed: {', '.join(sorted(missing))}")
    else:
        blocks = [b for b in blocks if not b["requires"]]
    if not blocks:
        pytest.skip("no code to run")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {"__name__": "docs_example"}
    for block in blocks:
        code = compile(block["code"], f"{page}:{block['line']}", "exec")
        exec(code, namespace)


def test_block_markers_are_well_formed():
    """A misspelt marker would silently run (or skip) a block."""
    for page in PAGES:
        for block in python_blocks(page):
            first = block["code"].lstrip().splitlines()[0] if block["code"].strip() else ""
            if re.match(r"#\s*(require|other)", first, re.I):
                assert block["requires"] or block["other"], f"{page}:{block['line']}: {first}"
            for module in block["requires"]:
                assert re.fullmatch(r"[A-Za-z_][\w.]*", module), f"{page}:{block['line']}"


# -- API reference ------------------------------------------------------------------------


def _generated():
    """The docs' build hook, ``docs/_ext/generated.py`` (it expands the markers)."""
    spec = importlib.util.spec_from_file_location("generated", DOCS / "_ext" / "generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_identifiers() -> list[tuple[str, str]]:
    """``(identifier, page)`` for every ``::: identifier`` block of the site, those the
    build hook generates included."""
    render = _generated().render
    found = []
    for page in PAGES:
        text = render(page.read_text(), page.relative_to(DOCS).as_posix())
        for line in text.splitlines():
            match = DIRECTIVE.match(line)
            if match:
                found.append((match["identifier"], _page_id(page)))
    return found


def public_names() -> list[str]:
    names = [f"mxopt.{name}" for name in mxopt.__all__]
    names += [f"mxopt.LearningRate.{name}" for name in mxopt.LearningRate.__all__]
    names += [f"mxopt.Momentum.{name}" for name in mxopt.Momentum.__all__]
    return names


def resolve(identifier: str):
    """The object ``identifier`` names: attributes of mxopt, or a submodule (``mxopt.thinc``)."""
    obj = mxopt
    parts = identifier.split(".")
    for k, part in enumerate(parts[1:], 2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:k]))
            except ImportError:
                raise AttributeError(identifier) from None
    return obj


def _same(a, b) -> bool:
    """One object under two names (``mxopt.get_momentum`` is ``mxopt.Momentum.get_momentum``)."""
    plain = (int, float, str, bytes, tuple, dict, list, type(None))
    return a is b and not isinstance(a, plain)


def test_every_public_name_is_in_the_api_reference():
    documented = [identifier for identifier, _ in documented_identifiers()]
    objects = [resolve(identifier) for identifier in documented]
    missing = [
        name
        for name in public_names()
        if name not in documented and not any(_same(resolve(name), obj) for obj in objects)
    ]
    assert not missing, (
        "public names without a '::: name' block in docs/api/*.md or "
        f"docs/optimizers/*.md: {missing}"
    )


def test_every_documented_identifier_exists_once():
    seen: dict[str, str] = {}
    for identifier, page in documented_identifiers():
        assert identifier.startswith("mxopt."), f"{page}: {identifier}"
        try:
            resolve(identifier)
        except AttributeError:
            pytest.fail(f"{page}: '::: {identifier}' names nothing in mxopt")
        assert identifier not in seen, f"{identifier} on both {seen[identifier]} and {page}"
        seen[identifier] = page


def _data_docstring(name: str, value) -> str | None:
    """The ``#:`` comment above, or the string literal below, a module-level assignment."""
    for module in list(sys.modules.values()):
        if not (isinstance(module, types.ModuleType) and module.__name__.startswith("mxopt")):
            continue
        if module.__dict__.get(name) is not value or not getattr(module, "__file__", None):
            continue
        source = pathlib.Path(module.__file__).read_text()
        lines = source.splitlines()
        body = ast.parse(source).body
        for k, node in enumerate(body):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else ([node.target] if isinstance(node, ast.AnnAssign) else [])
            )
            if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
                continue
            comments, row = [], node.lineno - 2
            while row >= 0 and lines[row].lstrip().startswith("#:"):
                comments.append(lines[row].lstrip()[2:].strip())
                row -= 1
            if comments:
                return " ".join(reversed(comments))
            following = body[k + 1] if k + 1 < len(body) else None
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                return following.value.value
    return None


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_has_a_docstring(name):
    obj = resolve(name)
    if isinstance(obj, types.ModuleType) or inspect.isclass(obj) or callable(obj):
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        assert own and own.strip(), f"{name} has no docstring of its own"
    else:
        doc = _data_docstring(name.rsplit(".", 1)[-1], obj)
        assert doc and doc.strip(), (
            f"{name} is data without documentation: put '#: ...' comment lines above its assignment"
        )


# -- the docstring converter --------------------------------------------------------------


def _converter():
    spec = importlib.util.spec_from_file_location(
        "rst_docstrings", DOCS / "_ext" / "rst_docstrings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rst_to_markdown


def test_converter_math_roles_and_literals():
    convert = _converter()
    text = (
        "With :math:`g` the :func:`~mxopt.normalized_gradient` and ``lr``:\n"
        "\n"
        ".. math::\n"
        "\n"
        "    m &\\leftarrow g \\\\\n"
        "    W &\\leftarrow W - m\n"
        "\n"
        "See :class:`Exp`."
    )
    out = convert(text, lambda name: {"Exp": "mxopt.learning_rate.Exp"}.get(name, name))
    assert "With $g$ the " in out and "`lr`:" in out
    assert (
        '<autoref identifier="mxopt.normalized_gradient" optional>'
        "<code>normalized_gradient()</code></autoref>" in out
    )
    assert "$$\n\\begin{aligned}\nm &\\leftarrow g \\\\\nW &\\leftarrow W - m\n" in out
    assert '<autoref identifier="mxopt.learning_rate.Exp" optional><code>Exp</code>' in out
    assert ".. math::" not in out and "``" not in out


def test_converter_literal_blocks_and_doctests():
    convert = _converter()
    out = convert("Swap them in::\n\n    a = 1\n    b = 2\n\nThen go on.")
    assert out.startswith("Swap them in:\n\n```python\na = 1\nb = 2\n```\n")
    assert out.rstrip().endswith("Then go on.")
    out = convert(">>> 1 + 1\n2")
    assert out == "```pycon\n>>> 1 + 1\n2\n```"
    out = convert("Example:\n    >>> 1 + 1\n    2")  # in a Google section: kept indented
    assert out == "Example:\n    ```pycon\n    >>> 1 + 1\n    2\n    ```"


def test_converter_math_inside_a_list_item():
    convert = _converter()
    out = convert("* with momentum:\n\n  .. math::\n\n      v = \\mu v\n\nAfter.")
    assert "    $$\n    v = \\mu v\n    $$" in out


# -- the build ----------------------------------------------------------------------------


def _docs_tools_missing() -> list[str]:
    wanted = ["mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"]
    return [name for name in wanted if not _importable(name)]


@pytest.mark.slow
@pytest.mark.skipif(bool(_docs_tools_missing()), reason='needs pip install -e ".[docs]"')
def test_site_builds_in_strict_mode(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not warnings, "\n".join(warnings) or output[-3000:]
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "api" / "training" / "index.html").exists()
    _check_rendering(tmp_path)
    check_offline_site(tmp_path)
    if _browser_available():  # as a reader sees it (docs/_ext/screenshots.py)
        findings = screenshots.look(tmp_path, tmp_path.parent / "screenshots")
        assert findings and not screenshots.problems(findings), screenshots.problems(findings)


def _load_screenshots():
    path = ROOT / "docs" / "_ext" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screenshots = _load_screenshots()


def _browser_available() -> bool:
    """Whether Playwright and its headless Chromium are installed (not in any extra)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    try:
        with sync_playwright() as playwright:
            playwright.chromium.launch().close()
    except Exception:
        return False
    return True


def test_the_screenshot_checker_names_what_is_wrong():
    good = {"page": "a.html", "typeset": 3, "raw": 0, "refused": [], "console_errors": []}
    raw = dict(good, page="b.html", raw=2)
    remote = dict(good, page="c.html", refused=["https://cdn.example.org/mathjax.js"])
    broken = dict(good, page="d.html", console_errors=["MathJax is not defined"])
    assert screenshots.problems([good]) == []
    found = screenshots.problems([good, raw, remote, broken])
    assert found == [
        "b.html: 2 formula(s) left as raw TeX",
        "c.html: loads from other hosts: https://cdn.example.org/mathjax.js",
        "d.html: console errors: MathJax is not defined",
    ]


def test_the_screenshot_server_serves_the_site(tmp_path):
    (tmp_path / "index.html").write_text("<p>hello</p>")
    import urllib.request

    with screenshots.serve(tmp_path) as base:
        assert urllib.request.urlopen(base + "index.html").read() == b"<p>hello</p>"


#: AbstractOptimizer's protocol, which the updater calls: shown on api/base.md only.
ENGINE_HOOKS = ("apply", "apply_segments", "prepare", "kernel", "kernel_scalars", "state_spec")


def _without_source(page: str) -> str:
    """A built page without its collapsible source listings (which may call anything)."""
    return re.sub(r'<details class="mkdocstrings-source".*?</details>', "", page, flags=re.S)


def _check_rendering(site: pathlib.Path) -> None:
    """What a reader sees: lists are lists, hooks stay hidden, links read as words."""
    optimizers = (site / "optimizers" / "index.html").read_text()
    notation = optimizers.split('id="notation"', 1)[1].split("<h2", 1)[0]
    assert notation.count("<li>") == 4, "the Notation list on optimizers.md is not a list"
    assert "\n- " not in notation, "a '- ' item of the Notation list was read as text"

    for page in sorted((site / "optimizers").glob("*/index.html")):
        text = _without_source(page.read_text())
        for hook in ENGINE_HOOKS:
            assert not re.search(rf'(id|href)="#?mxopt\.\w+\.{hook}"', text), (
                f"{page.relative_to(site)}: the engine hook {hook} is documented (mkdocs.yml's "
                "filters hide it)"
            )
    base = (site / "api" / "base" / "index.html").read_text()
    assert 'id="mxopt.AbstractOptimizer.kernel_scalars"' in base  # the protocol, for authors

    for page in sorted(site.rglob("*.html")):
        links = re.findall(r"<a\b[^>]*>(.*?)</a>", _without_source(page.read_text()), re.S)
        bare = [link for link in links if re.fullmatch(r"\s*[\w./-]+\.md(#[\w-]*)?\s*", link)]
        assert not bare, f"{page.relative_to(site)}: links that read as file names: {bare}"

    css = (site / "stylesheets" / "extra.css").read_text()
    assert re.search(r"table:not\(\[class\]\) code \{[^}]*word-break: normal", css)

    if _importable("ruff"):  # mkdocstrings-python formats long signatures with Ruff
        checkpoints = (site / "api" / "checkpoints" / "index.html").read_text()
        signature = re.search(r'id="mxopt.save_config".*?doc-signature[^>]*>(.*?)</div>',
                              checkpoints, re.S)  # fmt: skip
        lines = html.unescape(re.sub(r"<[^>]*>", "", signature[1])).strip().splitlines()
        assert len(lines) > 1 and max(map(len, lines)) <= 80, lines
