"""The site works without network access: it serves its math renderer itself (an mkdocs hook).

The formulas are typeset in the browser by MathJax 3: ``pymdownx.arithmatex`` (generic
mode) writes them as ``<span class="arithmatex">\\( ... \\)</span>`` and
``<div class="arithmatex">\\[ ... \\]</div>``, and ``docs/javascripts/mathjax.js`` tells
MathJax to typeset exactly those. MathJax's files come from the Python package
``django-static-mathjax`` (the ``docs`` extra installs it; it holds MathJax's own release
files, nothing Django-specific is used): after each build, the component the pages load
(``tex-mml-chtml.js``), its fonts, the TeX extensions it loads on demand and the
accessibility parts of its menu are copied to ``assets/mathjax/`` in the site, so MathJax
finds everything next to itself.

Then the built site is checked: a page, or a stylesheet, that loads a script, a style, a
font or an image from another host fails the build (:func:`external_references`).
mkdocs.yml loads this file under ``hooks:``.
"""

from __future__ import annotations

import html.parser
import importlib.metadata
import json
import pathlib
import re
import shutil

#: The distribution that ships MathJax's files, and where they are inside it.
MATHJAX_DISTRIBUTION = "django-static-mathjax"
MATHJAX_PACKAGE_DIR = "mathjax/static/mathjax"
#: Where they go in the site (mkdocs.yml's extra_javascript names ``MATHJAX_SCRIPT``).
MATHJAX_SITE_DIR = "assets/mathjax"
MATHJAX_SCRIPT = f"{MATHJAX_SITE_DIR}/tex-mml-chtml.js"
#: What the component needs at run time, relative to MathJax's ``es5/`` folder: the
#: CommonHTML fonts (output/), the extensions ``autoload`` fetches (input/), and what its
#: context menu loads when a reader turns on speech or the explorer (ui/, a11y/, sre/).
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output", "ui", "a11y", "sre")


def mathjax_source() -> pathlib.Path:
    """MathJax's ``es5/`` folder in the installed ``django-static-mathjax``."""
    try:
        distribution = importlib.metadata.distribution(MATHJAX_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LookupError(
            f"the documentation serves MathJax from the {MATHJAX_DISTRIBUTION} package, "
            'which is not installed: pip install -e ".[docs]"'
        ) from None
    root = pathlib.Path(distribution.locate_file(MATHJAX_PACKAGE_DIR))
    version = json.loads((root / "package.json").read_text())["version"]
    if not version.startswith("3."):
        # MathJax 4 lays its files out differently (no es5/, fonts in other packages).
        raise LookupError(f"{MATHJAX_DISTRIBUTION} holds MathJax {version}; expected 3.x")
    return root / "es5"


def copy_mathjax(site_dir: pathlib.Path) -> pathlib.Path:
    """Copy MathJax's run-time files (and its licence) into the site; returns their folder."""
    source = mathjax_source()
    target = site_dir / MATHJAX_SITE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            shutil.copy2(source / part, target / part)
    shutil.copy2(source.parent / "LICENSE", target / "LICENSE")
    return target


# -- the check ----------------------------------------------------------------------------

#: ``<link rel=...>`` values that make the browser fetch the target.
_FETCHING_RELS = {
    "stylesheet",
    "preload",
    "modulepreload",
    "prefetch",
    "preconnect",
    "dns-prefetch",
    "icon",
    "shortcut",
    "apple-touch-icon",
    "manifest",
}
#: Elements whose ``src`` (or ``srcset``/``data``/``poster``) the browser loads.
_LOADING_TAGS = {"script", "img", "source", "iframe", "audio", "video", "track", "embed", "object"}
_CSS_URL = re.compile(
    r"""url\(\s*(['"]?)(?P<url>[^'")]*)\1\s*\)|@import\s+(['"])(?P<imp>[^'"]*)\3"""
)


def is_external(url: str) -> bool:
    """A URL on another host: ``http://...``, ``https://...`` or protocol-relative ``//...``."""
    return bool(re.match(r"\s*(https?:)?//", url, re.I))


def css_urls(text: str) -> list[str]:
    """The ``url(...)`` and ``@import`` targets of a stylesheet (or a style attribute)."""
    return [m["url"] if m["url"] is not None else m["imp"] for m in _CSS_URL.finditer(text)]


class _Loads(html.parser.HTMLParser):
    """Collects what a page makes the browser load."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        if tag == "link" and _FETCHING_RELS & set(attrs.get("rel", "").lower().split()):
            self.urls.append(attrs.get("href", ""))
        if tag in _LOADING_TAGS:
            for name in ("src", "data", "poster"):
                if attrs.get(name):
                    self.urls.append(attrs[name])
        for name in ("srcset", "imagesrcset"):
            if attrs.get(name):
                self.urls += [part.split()[0] for part in attrs[name].split(",") if part.strip()]
        if attrs.get("style"):
            self.urls += css_urls(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += css_urls(data)


def page_loads(text: str) -> list[str]:
    """The URLs an HTML page loads by itself: scripts, stylesheets, fonts, images, frames."""
    parser = _Loads()
    parser.feed(text)
    parser.close()
    return parser.urls


def external_references(site_dir: pathlib.Path) -> list[str]:
    """``"path: url"`` for everything in the built site that would load from another host:
    the pages' scripts, stylesheets, images and frames, and the stylesheets' fonts, images
    and imports. MathJax's own folder is left out: its bundle names CDN addresses that
    only Internet Explorer uses, and its fonts come from its own folder (checked by the
    tests)."""
    site_dir = pathlib.Path(site_dir)
    found = []
    for path in sorted(site_dir.rglob("*")):
        relative = path.relative_to(site_dir).as_posix()
        if relative.startswith(MATHJAX_SITE_DIR + "/") or not path.is_file():
            continue
        if path.suffix == ".html":
            urls = page_loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".css":
            urls = css_urls(path.read_text(encoding="utf-8"))
        else:
            continue
        found += [f"{relative}: {url}" for url in urls if is_external(url)]
    return found


# -- the mkdocs hook ----------------------------------------------------------------------


def on_config(config):
    from mkdocs.exceptions import PluginError

    try:
        mathjax_source()
    except LookupError as error:
        raise PluginError(str(error)) from None
    scripts = [str(script) for script in config.extra_javascript]
    if MATHJAX_SCRIPT not in scripts:
        raise PluginError(f"mkdocs.yml's extra_javascript should load {MATHJAX_SCRIPT}")
    return config


def on_post_build(config):
    from mkdocs.exceptions import PluginError

    site_dir = pathlib.Path(config.site_dir)
    copy_mathjax(site_dir)
    external = external_references(site_dir)
    if external:
        raise PluginError(
            "the site must work offline, but these load from another host:\n  "
            + "\n  ".join(external)
        )
