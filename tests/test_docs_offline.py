"""The documentation site works without network access.

MathJax is served from the site itself (``docs/_ext/offline.py`` copies it from the
``django-static-mathjax`` package at build time) and no page loads a script, a style, a
font or an image from another host.

* The checker of the build hook finds what a page or a stylesheet loads from elsewhere
  (small made-up sites here; the hook fails the build on any).
* ``docs/javascripts/mathjax.js`` typesets what ``pymdownx.arithmatex`` (generic mode)
  writes, and names no other host; mkdocs.yml loads MathJax from the site, and no Google
  Fonts.
* :func:`check_offline_site` checks a built site; ``tests/test_docs_site.py`` calls it on
  the site it builds (the build takes minutes: it is done once).
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MATHJAX_CONFIG = DOCS / "javascripts" / "mathjax.js"


def _offline():
    spec = importlib.util.spec_from_file_location("offline", DOCS / "_ext" / "offline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


offline = _offline()


def _mathjax_installed() -> bool:
    try:
        offline.mathjax_source()
    except LookupError:
        return False
    return True


# -- the checker --------------------------------------------------------------------------


def _site(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_finds_what_pages_load_from_other_hosts(tmp_path):
    page = """<!doctype html><html><head>
    <link rel="canonical" href="https://example.org/page/">
    <link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>
    <link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">
    <link rel="stylesheet" href="../assets/main.css">
    <script src="//unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>
    <script src="../assets/mathjax/tex-mml-chtml.js"></script>
    <style>@import "http://example.org/a.css"; .x { background: url(local.png) }</style>
    </head><body>
    <a href="https://example.org/">a link is not loaded</a>
    <img src="https://example.org/logo.png" alt=""><img src="images/plot.png" alt="">
    <picture><source srcset="https://example.org/a.webp 1x, b.webp 2x"></picture>
    <div style="background-image: url('https://example.org/bg.png')"></div>
    <iframe src="https://example.org/frame"></iframe>
    </body></html>"""
    site = _site(tmp_path, {"page/index.html": page})
    found = offline.external_references(site)
    assert found == [
        "page/index.html: https://fonts.gstatic.com",
        "page/index.html: https://fonts.googleapis.com/css?family=Roboto",
        "page/index.html: //unpkg.com/mathjax@3/es5/tex-mml-chtml.js",
        "page/index.html: http://example.org/a.css",
        "page/index.html: https://example.org/logo.png",
        "page/index.html: https://example.org/a.webp",
        "page/index.html: https://example.org/bg.png",
        "page/index.html: https://example.org/frame",
    ]


def test_checker_reads_stylesheets(tmp_path):
    css = """@import url("https://fonts.googleapis.com/css2?family=Roboto");
    @import "print.css";
    @font-face { font-family: X; src: url(https://example.org/x.woff2) format("woff2"),
                 url("../fonts/x.woff") format("woff"); }
    .icon { background: url('data:image/svg+xml;charset=utf-8,<svg/>') }"""
    site = _site(tmp_path, {"assets/site.css": css, "index.html": "<p>nothing</p>"})
    assert offline.external_references(site) == [
        "assets/site.css: https://fonts.googleapis.com/css2?family=Roboto",
        "assets/site.css: https://example.org/x.woff2",
    ]


def test_checker_accepts_a_local_site(tmp_path):
    page = (
        '<link rel="stylesheet" href="assets/main.css"><script src="/javascripts/a.js"></script>'
        '<link rel="next" href="https://example.org/next/"><img src="data:image/png;base64,AA">'
    )
    site = _site(tmp_path, {"index.html": page, "assets/main.css": "a { color: red }"})
    assert offline.external_references(site) == []


# -- the renderer's configuration ---------------------------------------------------------


def _js_string(text: str) -> str:
    """A JavaScript string literal's value (only the escapes mathjax.js uses)."""
    return text.replace("\\\\", "\\")


def _delimiters(config: str, key: str) -> list[tuple[str, str]]:
    match = re.search(rf"{key}:\s*\[(.*?)\]\s*,", config, re.S)
    assert match, f"{MATHJAX_CONFIG.name} sets no tex.{key}"
    pairs = re.findall(r'\[\s*"((?:[^"\\]|\\.)*)"\s*,\s*"((?:[^"\\]|\\.)*)"\s*\]', match[1] + "]")
    return [(_js_string(a), _js_string(b)) for a, b in pairs]


def test_mathjax_config_typesets_what_arithmatex_writes():
    """Generic arithmatex writes ``\\( \\)`` in ``span.arithmatex`` and ``\\[ \\]`` in
    ``div.arithmatex``; MathJax must look for those delimiters, in those elements only."""
    markdown = pytest.importorskip("markdown")
    pytest.importorskip("pymdownx.arithmatex")
    out = markdown.markdown(
        "Inline $g_t$ here.\n\n$$\nm \\leftarrow g\n$$\n",
        extensions=["pymdownx.arithmatex"],
        extension_configs={"pymdownx.arithmatex": {"generic": True}},
    )
    assert '<span class="arithmatex">\\(g_t\\)</span>' in out
    assert '<div class="arithmatex">\\[\nm \\leftarrow g\n\\]</div>' in out

    config = MATHJAX_CONFIG.read_text()
    assert ("\\(", "\\)") in _delimiters(config, "inlineMath")
    assert ("\\[", "\\]") in _delimiters(config, "displayMath")
    assert re.search(r'processHtmlClass:\s*"arithmatex"', config)
    assert re.search(r'ignoreHtmlClass:\s*"\.\*\|"', config)  # everything else is left alone


def test_mathjax_config_names_no_other_host():
    """No ``loader.paths``, ``chtml.fontURL`` or anything else pointing at a CDN: MathJax
    finds its components and fonts next to its own script."""
    config = MATHJAX_CONFIG.read_text()
    assert not re.search(r"""(https?:)?//[\w.-]+\.\w""", config.replace("\\\\", "")), config
    assert "fontURL" not in config and "paths" not in config


def test_mkdocs_yml_loads_mathjax_from_the_site():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    scripts = [str(s) for s in config.get("extra_javascript", [])]
    styles = [str(s) for s in config.get("extra_css", [])]
    external = [url for url in scripts + styles if offline.is_external(url)]
    assert not external, f"mkdocs.yml loads from another host: {external}"
    # the configuration first, then MathJax, which reads it when it starts
    assert scripts.index("javascripts/mathjax.js") < scripts.index(offline.MATHJAX_SCRIPT)
    assert "docs/_ext/offline.py" in config["hooks"]
    assert config["theme"].get("font") is False, "Material fetches its fonts from Google Fonts"


@pytest.mark.skipif(not _mathjax_installed(), reason='needs pip install -e ".[docs]"')
def test_mathjax_copy_has_its_fonts_and_extensions(tmp_path):
    target = offline.copy_mathjax(tmp_path)
    assert target == tmp_path / offline.MATHJAX_SITE_DIR
    assert (tmp_path / offline.MATHJAX_SCRIPT).stat().st_size > 500_000
    assert (target / "LICENSE").exists()  # Apache-2.0: the licence travels with the files
    fonts = target / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("MathJax_*.woff"))) >= 20
    # what autoload fetches for \boldsymbol or \cancel, and the speech rules of the menu
    assert (target / "input" / "tex" / "extensions" / "boldsymbol.js").exists()
    assert (target / "sre" / "mathmaps" / "en.json").exists()


@pytest.mark.skipif(not _mathjax_installed(), reason='needs pip install -e ".[docs]"')
def test_hook_fails_the_build_on_a_page_that_loads_from_another_host(tmp_path):
    exceptions = pytest.importorskip("mkdocs.exceptions")
    page = '<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>'
    site = _site(tmp_path, {"optimizers/index.html": page})
    config = type("Config", (), {"site_dir": str(site)})()
    with pytest.raises(exceptions.PluginError, match="optimizers/index.html: https://unpkg"):
        offline.on_post_build(config)
    assert (site / offline.MATHJAX_SCRIPT).is_file()  # copied before the check
    (site / "optimizers" / "index.html").write_text(page.replace("https://unpkg.com", ".."))
    offline.on_post_build(config)


# -- a built site (tests/test_docs_site.py builds it) ---------------------------------------


def check_offline_site(site: pathlib.Path) -> None:
    """The built site loads everything from itself, MathJax and its fonts included."""
    external = offline.external_references(site)
    assert not external, "the site loads from another host:\n" + "\n".join(external)

    mathjax = site / offline.MATHJAX_SITE_DIR
    assert (site / offline.MATHJAX_SCRIPT).is_file()
    assert list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))

    pages = [p for p in sorted(site.rglob("*.html")) if mathjax not in p.parents]
    with_math = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"fonts\.(googleapis|gstatic)\.com|unpkg\.com|jsdelivr", text), page
        if 'class="arithmatex"' not in text:
            continue
        with_math += 1
        scripts = [url for url in offline.page_loads(text) if url.endswith(".js")]
        local = [url for url in scripts if url.endswith(offline.MATHJAX_SCRIPT)]
        assert local, f"{page.relative_to(site)} has formulas but does not load MathJax"
        # the page's relative URL leads to the copied file
        if not local[0].startswith("/"):
            assert (page.parent / local[0]).resolve() == (site / offline.MATHJAX_SCRIPT).resolve()
    assert with_math, "no page has formulas: is pymdownx.arithmatex still in mkdocs.yml?"
