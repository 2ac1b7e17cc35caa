"""Render mxopt's reST-flavoured docstrings with mkdocstrings (a griffe extension).

mxopt's docstrings are written for ``help()`` and Sphinx: Google-style sections
(``Args:``, ``Attributes:``, ``Example:``) around reStructuredText markup. This
extension rewrites, for the documentation site only, the reST parts into the
Markdown that mkdocstrings renders; the docstrings in the code are not changed.

* ``.. math::`` blocks become ``$$ ... $$`` (arithmatex), multi-line ones wrapped
  in ``aligned``; ``:math:`x``` becomes ``$x$``;
* ``:class:``, ``:func:``, ``:meth:``, ``:attr:``, ``:data:``, ``:mod:``,
  ``:exc:`` and ``:obj:`` roles become optional cross-references (a link when
  the target is documented on the site, plain code otherwise); ``~`` keeps
  the last component as the title, as in Sphinx;
* ````code```` becomes ```code```;
* a paragraph ending in ``::`` introduces a fenced code block;
* doctest lines (``>>>``) and their output become a ``pycon`` block (griffe
  would read an ``Example:`` section as an admonition, where ``>>>`` is a quote);
* module attributes documented with Sphinx's ``#:`` comments get those
  comments as their docstring.

mkdocs.yml loads it with ``extensions: [docs/_ext/rst_docstrings.py]``.
:func:`rst_to_markdown` is plain Python, tested in ``tests/test_docs_site.py``.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Callable

ROLE_RE = re.compile(
    r":(?:py:)?(?P<role>math|class|func|meth|attr|data|mod|exc|obj|const):`(?P<body>[^`]+)`"
)
LITERAL_RE = re.compile(r"``(?P<code>[^`]+?)``")
MATH_RE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<rest>.*)$")
SECTION_TITLE_RE = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
LIST_RE = re.compile(r"^(?P<indent>\s*)(?:[*+-]|\d+[.)])\s+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """Lines from ``start`` that are blank or indented more than ``indent``.

    Returns the block (trailing blank lines left out) and the index after it.
    """
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def _continuation_indent(out: list[str], indent: int) -> int:
    """Where a block at reST ``indent`` goes in Markdown.

    Inside a list item (reST indents its body by the marker's width, Markdown
    wants four spaces) the block moves to the item's indentation plus four.
    """
    if indent == 0:
        return 0
    for line in reversed(out):
        if not line.strip():
            continue
        if _indent(line) < indent:
            match = LIST_RE.match(line)
            return len(match["indent"]) + 4 if match else indent
    return indent


def _math(body: list[str]) -> list[str]:
    body = [line for line in textwrap.dedent("\n".join(body)).split("\n")]
    while body and not body[0].strip():
        body.pop(0)
    text = "\n".join(body).rstrip()
    if "\\\\" in text or "&" in text:
        return ["\\begin{aligned}", *text.split("\n"), "\\end{aligned}"]
    return text.split("\n")


def rst_to_markdown(text: str, resolve: Callable[[str], str] | None = None) -> str:
    """``text`` (a docstring with reST markup) as Markdown for mkdocstrings.

    ``resolve(name)`` gives the full dotted path of a cross-reference target
    (``name`` as written, without ``~``); by default the name itself.
    """
    resolve = resolve or (lambda name: name)
    lines = text.split("\n")
    out: list[str] = []
    verbatim: set[int] = set()  # indices in ``out`` that inline rules must not touch

    def emit(block: list[str], pad: int) -> None:
        # A blank line before the block, except right after a Google section title
        # ("Example:"), whose content must follow it directly.
        if (
            out
            and out[-1].strip()
            and not (SECTION_TITLE_RE.match(out[-1]) and _indent(out[-1]) < pad)
        ):
            out.append("")
        for line in block:
            verbatim.add(len(out))
            out.append(" " * pad + line if line else "")
        out.append("")

    i = 0
    while i < len(lines):
        line = lines[i]
        indent = _indent(line)
        stripped = line.strip()
        math = MATH_RE.match(line)
        if math:
            body, end = _block(lines, i + 1, indent)
            if math["rest"]:
                body = [" " * (indent + 4) + math["rest"], *body]
            pad = _continuation_indent(out, indent)
            emit(["$$", *_math(body), "$$"], pad)
            i = end
            continue

        if stripped.endswith("::") and not stripped.startswith(".."):
            following = i + 1
            while following < len(lines) and not lines[following].strip():
                following += 1
            if following < len(lines) and _indent(lines[following]) > indent:
                body, end = _block(lines, i + 1, indent)
                if stripped == "::":
                    pass
                elif line.rstrip().endswith(" ::"):
                    out.append(line.rstrip()[:-3])
                else:
                    out.append(line.rstrip()[:-1])
                pad = _continuation_indent(out, indent)
                code = textwrap.dedent("\n".join(body)).strip("\n").split("\n")
                emit(["```python", *code, "```"], pad)
                i = end
                continue

        if stripped.startswith(">>>"):
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            code = textwrap.dedent("\n".join(lines[i:end])).split("\n")
            emit(["```pycon", *code, "```"], _continuation_indent(out, indent))
            i = end
            continue

        out.append(line)
        i += 1

    # Inline markup, paragraph by paragraph (roles and literals may span lines).
    result: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            result.extend(_inline("\n".join(prose), resolve).split("\n"))
            prose.clear()

    for k, line in enumerate(out):
        if k in verbatim:
            flush()
            result.append(line)
        else:
            prose.append(line)
    flush()
    while result and not result[-1].strip():
        result.pop()
    return "\n".join(result)


def _inline(text: str, resolve: Callable[[str], str]) -> str:
    def role(match: re.Match) -> str:
        body = match["body"]
        if match["role"] == "math":
            return "$" + " ".join(body.split()) + "$"
        target = " ".join(body.split())
        explicit = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^>]+)>", target)
        if explicit:
            title, target = explicit["title"], explicit["target"]
        else:
            title = target.lstrip("~")
            if target.startswith("~"):
                title = title.rsplit(".", 1)[-1]
        target = target.lstrip("~")
        if match["role"] in ("func", "meth") and not title.endswith(")") and not explicit:
            title += "()"
        identifier = html.escape(resolve(target), quote=True)
        code = f"<code>{html.escape(title)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    text = ROLE_RE.sub(role, text)
    return LITERAL_RE.sub(lambda m: "`" + m["code"] + "`", text)


# -- griffe --------------------------------------------------------------------------------

try:
    import griffe
except ImportError:  # the converter above is usable (and tested) without griffe
    griffe = None


def _resolver(obj) -> Callable[[str], str]:
    def resolve(name: str) -> str:
        scope = obj
        while scope is not None:
            try:
                return scope.resolve(name)
            except Exception:  # noqa: BLE001 - griffe raises NameResolutionError and others
                scope = scope.parent
        return name

    return resolve


def _comment_docstring(attribute) -> str | None:
    """The ``#:`` comment lines right above an attribute's assignment, if any."""
    try:
        lines = attribute.lines_collection[attribute.filepath]
    except Exception:  # noqa: BLE001 - no source (a compiled module, a builtin)
        return None
    lineno = attribute.lineno
    if not lineno or lineno > len(lines):
        return None
    comments = []
    k = lineno - 2
    while k >= 0 and lines[k].lstrip().startswith("#:"):
        comments.append(lines[k].lstrip()[2:].strip())
        k -= 1
    return "\n".join(reversed(comments)) or None


def _add_table_aliases(pkg) -> None:
    """``mxopt.<Name>`` for every optimizer of the table: ``mxopt`` re-exports them with
    ``from mxopt.optimizers import *`` (their ``__all__`` is built from the table at import
    time), which static analysis cannot follow; the table itself is the truth."""
    import mxopt

    for name in (*mxopt.OPTIMIZERS, "Ranger"):
        if name not in pkg.members:
            pkg.set_member(name, griffe.Alias(name, f"mxopt.optimizers.{name}", parent=pkg))


if griffe is not None:

    class RstDocstrings(griffe.Extension):
        """Convert every docstring of the package once it is loaded."""

        def on_package(self, *, pkg, **kwargs) -> None:
            if pkg.name == "mxopt":
                _add_table_aliases(pkg)
            seen: set[int] = set()
            self._walk(pkg, seen)

        def _walk(self, obj, seen: set[int]) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.is_attribute and obj.docstring is None:
                comment = _comment_docstring(obj)
                if comment:
                    obj.docstring = griffe.Docstring(comment, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, _resolver(obj))
            for member in obj.members.values():
                if not member.is_alias:
                    self._walk(member, seen)
