"""Config text and files: Thinc-style ``.cfg``, TOML and JSON, read and written.

Configs come as dicts, as Thinc-style config text (parsed with `confection
<https://github.com/explosion/confection>`_, Thinc's config library: ``pip
install confection``), as TOML or as JSON, and as files of these::

    [optimizer]
    @optimizers = "mxopt.ADAM.v1"
    lr = 0.001
    weight_decay = 0.0

    [optimizer.lr_scheduler]
    @schedules = "mxopt.LearningRate.Cosine.v1"
    max_update = 1000
    base_lr = 0.001

The same in TOML quotes the registry keys (``"@optimizers" = "mxopt.ADAM.v1"``).
This module turns text into dicts and dicts into text; :mod:`mxopt.persist.config`
builds objects from the dicts.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from mxopt.core.checks import clipped, shown
from mxopt.persist.atomic import replaced
from mxopt.persist.registry import KIND_KEYS, ConfigError, find, options_of

__all__ = ["FILE_FORMATS", "MAX_DEPTH", "MAX_TEXT", "check_bounds", "dumps", "parse", "read",
           "write_atomically"]  # fmt: skip

#: Bounds on what a config may be, checked before it is parsed or built, so that a
#: hostile or broken file gives a ConfigError quickly instead of a RecursionError, a
#: long wait or a message the size of the file. Real configs are a few kilobytes, a few
#: levels deep, with option names of a few words.
MAX_TEXT = 1 << 20  # characters of config text (and bytes of a config file)
MAX_DEPTH = 32  # nested tables and lists
MAX_KEY = 200  # characters of one key
MAX_VALUES = 100_000  # tables, lists and values in all

_REGISTRY_KEY_LINE = re.compile(r"^\s*@\w+\s*=", re.MULTILINE)
_QUOTED_REGISTRY_KEY_LINE = re.compile(r"^\s*[\"']@\w+[\"']\s*=", re.MULTILINE)
FILE_FORMATS = {".toml": "toml", ".json": "json", ".cfg": "cfg", ".ini": "cfg", ".conf": "cfg"}


def _toml_module():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:  # pragma: no cover - tomli is a dependency on 3.10
        raise ConfigError("reading TOML on Python 3.10 needs tomli: pip install tomli") from None
    return tomli


def _confection():
    try:
        import confection
    except ImportError:
        raise ConfigError(
            "reading a Thinc-style config (a [section] with '@optimizers = ...' keys) "
            "needs confection, Thinc's config library: pip install confection "
            "(or pip install 'mxopt[config]'); TOML, JSON and dicts need nothing extra"
        ) from None
    return confection


def check_bounds(tree, where: str = "config") -> None:
    """Raise :class:`ConfigError` if ``tree`` (dicts and lists) nests deeper than
    :data:`MAX_DEPTH`, holds a key longer than ``MAX_KEY`` or more than ``MAX_VALUES``
    values. Walks without recursion, so any tree can be checked."""
    pending, count = [(tree, 0)], 0
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{where}: more than {MAX_VALUES} values; that is no optimizer")
        if isinstance(node, dict):
            children = node.values()
            long_key = next((k for k in node if isinstance(k, str) and len(k) > MAX_KEY), None)
            if long_key is not None:
                raise ConfigError(
                    f"{where}: a key of {len(long_key)} characters ({shown(long_key)}); "
                    f"option and section names are at most {MAX_KEY}"
                )
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth >= MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        pending.extend((child, depth + 1) for child in children)


def _plain(value):
    """confection's Config (a dict subclass) and its tuples as plain dicts and lists."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse(text: str, format: str | None = None) -> dict:
    """Config text as a dict of sections.

    ``format`` is ``"cfg"`` (Thinc-style, read with confection, with its
    ``${section.key}`` interpolation), ``"toml"``, ``"json"`` or ``None`` to
    tell from the text: JSON if it starts with ``{``, Thinc-style if a line
    starts with an ``@registry`` key, TOML if with a quoted ``"@registry"`` key,
    else TOML, falling back to Thinc-style.
    """
    if format not in (None, "cfg", "toml", "json"):
        raise ValueError(f"format must be 'cfg', 'toml', 'json' or None, got {shown(format)}")
    if len(text) > MAX_TEXT:
        raise ConfigError(
            f"config: the text is {len(text)} characters long; configs are limited to "
            f"{MAX_TEXT} (mxopt.persist.files.MAX_TEXT)"
        )
    try:
        parsed = _parse(text, format)
    except RecursionError:  # the parsers recurse once per nested table or list
        raise ConfigError(f"config: nested deeper than {MAX_DEPTH} levels") from None
    check_bounds(parsed)
    return parsed


def _parse(text: str, format: str | None):
    if format is None:
        stripped = text.lstrip()
        if stripped.startswith("{"):
            format = "json"
        elif _REGISTRY_KEY_LINE.search(text):
            format = "cfg"
        elif _QUOTED_REGISTRY_KEY_LINE.search(text):
            format = "toml"
    if format == "json":
        try:
            data = json.loads(text)
        except ValueError as error:  # JSONDecodeError, or an integer of over 4300 digits
            raise ConfigError(f"config: not valid JSON: {clipped(str(error))}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a JSON object, got {type(data).__name__}")
        return data
    if format in (None, "toml"):
        toml = _toml_module()
        try:
            return toml.loads(text)
        except (toml.TOMLDecodeError, ValueError) as error:
            if format == "toml":
                raise ConfigError(f"config: not valid TOML: {clipped(str(error))}") from None
            toml_error = error
    confection = _confection()
    try:
        parsed = confection.Config().from_str(text, interpolate=True)
    except Exception as error:  # configparser and confection errors of every kind
        detail = f"; as TOML: {toml_error}" if format is None else ""
        raise ConfigError(
            f"config: cannot read it as a Thinc-style config: "
            f"{type(error).__name__}: {clipped(str(error) + detail)}"
        ) from None
    return _exact_values(text, _plain(parsed))


_WHOLE_REFERENCE = re.compile(r"^\$\{([^}]+)\}$")


def _exact_values(text: str, parsed: dict) -> dict:
    """Re-read the literal values of Thinc-style text with Python's exact JSON parser.

    confection before 1.0 parses values with srsly's ujson, which rounds some
    decimals wrongly (``0.95`` becomes ``0.9500000000000001``), so a written
    config would not build the same object again. confection keeps the structure
    and the interpolation; every value that is plain JSON, or a whole
    ``${section.key}`` reference to one, is taken from Python's parser instead.
    """
    import configparser
    import copy

    raw = configparser.ConfigParser(interpolation=None)
    raw.optionxform = str
    try:
        raw.read_string(text)
    except configparser.Error:
        return parsed

    def node_at(dotted: str):
        node = parsed
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, dict) else None

    references = []
    for section in raw.sections():
        node = node_at(section)
        if node is None:
            continue
        for key, value in raw.items(section, raw=True):
            if key not in node:
                continue
            value = value.strip()
            reference = _WHOLE_REFERENCE.match(value)
            if reference:
                references.append((node, key, reference.group(1)))
            elif "${" not in value:
                try:
                    node[key] = json.loads(value)
                except ValueError:
                    pass
    for node, key, reference in references:
        section, _, name = reference.rpartition(".")
        target = node_at(section) if section else None
        if target is not None and name in target:
            node[key] = copy.deepcopy(target[name])
    return parsed


def read(source) -> tuple[dict, str]:
    """``(dict, where)`` from a dict, config text or a file path."""
    if isinstance(source, dict):
        return source, ""
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and "\n" not in source
        and "=" not in source
        and not source.lstrip().startswith("{")
    ):
        path = Path(source)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_TEXT + 1)  # no more than the limit is ever read
            if len(data) > MAX_TEXT:
                raise ConfigError(
                    f"{path}: larger than {MAX_TEXT} bytes; configs are limited to that "
                    f"(mxopt.persist.files.MAX_TEXT)"
                )
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            detail = getattr(error, "strerror", None) or error  # strerror: without the name
            raise ConfigError(f"cannot read config file {shown(str(path))}: {detail}") from None
        fmt = FILE_FORMATS.get(path.suffix.lower())
        try:
            return parse(text, fmt), f"{path}: "
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    if isinstance(source, str):
        return parse(source), ""
    raise TypeError(f"expected a config dict, config text or a path, got {type(source).__name__}")


# -- writing ---------------------------------------------------------------------------


def dumps(config: dict, format: str = "cfg", *, section: str | None = "optimizer") -> str:
    """A config dict as config text.

    ``format``: ``"cfg"`` (Thinc-style: what Thinc, spaCy and confection read),
    ``"toml"`` or ``"json"``. The object goes in ``section`` (a dotted path;
    ``None`` is allowed for JSON only, giving the bare object). Nested objects
    (``lr_scheduler``, ...) become sub-sections; lists of objects stay inline.
    TOML has no ``null``: an option that is ``None`` is left out, which is only
    possible where ``None`` is its default (else :class:`~mxopt.ConfigError`).
    """
    if format == "json":
        data = config
        if section:
            for key in reversed(section.split(".")):
                data = {key: data}
        return json.dumps(data, indent=2) + "\n"
    if not section:
        raise ValueError(f"format {shown(format)} needs a section name")
    if format == "toml":
        return _TomlWriter().document(section, config)
    if format == "cfg":
        return _cfg_document(section, config)
    raise ValueError(f"format must be 'cfg', 'toml' or 'json', got {shown(format)}")


def write_atomically(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`mxopt.persist.atomic.replaced`)."""
    with replaced(path, "w", encoding="utf-8") as file:
        file.write(text)


def _is_object(value) -> bool:
    return isinstance(value, dict) and any(str(k).startswith("@") for k in value)


def _cfg_value(value) -> str:
    """A value as confection reads it (JSON; strings quoted)."""
    return json.dumps(value)


def _cfg_document(section: str, config: dict) -> str:
    blocks = []

    def block(name: str, table: dict) -> None:
        lines, nested = [f"[{name}]"], []
        for key, value in table.items():
            if isinstance(value, dict):
                nested.append((f"{name}.{key}", value))
            else:
                lines.append(f"{key} = {_cfg_value(value)}")
        blocks.append("\n".join(lines))
        for child, value in nested:
            block(child, value)

    block(section, config)
    return "\n\n".join(blocks) + "\n"


class _TomlWriter:
    """A small TOML writer for config dicts (tables, numbers, bools, strings, lists)."""

    _BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

    def key(self, key) -> str:
        key = str(key)
        return key if self._BARE_KEY.match(key) else json.dumps(key)

    def value(self, value, path: str) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return repr(value)  # finite: to_config refuses inf and nan
        if isinstance(value, str):
            return json.dumps(value)  # JSON escapes are valid TOML basic-string escapes
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self.value(v, f"{path}[{i}]") for i, v in enumerate(value)) + "]"
        if isinstance(value, dict):
            items = self.items(value, path)
            return "{ " + ", ".join(f"{self.key(k)} = {self.value(v, f'{path}.{k}')}"
                                    for k, v in items) + " }"  # fmt: skip
        raise ConfigError(f"{path}: {shown(value)} cannot be written as TOML")

    def items(self, table: dict, path: str) -> list:
        """The entries of ``table`` to write: ``None`` left out where it is the default."""
        defaults = _defaults_of(table)
        kept = []
        for key, value in table.items():
            if value is None:
                if defaults is not None and key in defaults and defaults[key] is None:
                    continue
                raise ConfigError(
                    f"{path}.{key}: None cannot be written in TOML (it is not this option's "
                    f"default); write the config as 'cfg' or 'json'"
                )
            kept.append((key, value))
        return kept

    def document(self, section: str, config: dict) -> str:
        blocks = []

        def table(name: str, content: dict) -> None:
            lines, nested = [f"[{'.'.join(self.key(k) for k in name.split('.'))}]"], []
            for key, value in self.items(content, name):
                if isinstance(value, dict):
                    nested.append((f"{name}.{key}", value))
                else:
                    lines.append(f"{self.key(key)} = {self.value(value, f'{name}.{key}')}")
            blocks.append("\n".join(lines))
            for child, value in nested:
                table(child, value)

        table(section, config)
        return "\n\n".join(blocks) + "\n"


def _defaults_of(table: dict) -> dict | None:
    """The default of every option of the object ``table`` describes (if it names one)."""
    keys = [k for k in table if isinstance(k, str) and k.startswith("@")]
    if len(keys) != 1:
        return None
    kind = next((k for k, v in KIND_KEYS.items() if v == keys[0]), None)
    target = find(kind, table[keys[0]]) if kind is not None else None
    if target is None:
        return None
    options, _ = options_of(target)
    return {name: (None if p.default is p.empty else p.default) for name, p in options.items()}
