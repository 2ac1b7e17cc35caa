"""Optimizers, schedules and averaging as plain, versioned configuration dicts.

Every optimizer, scheduler and averaging rule has a registered name with a
version, e.g. ``mxopt.ADAM.v1``, ``mxopt.LearningRate.Exp.v1``,
``mxopt.EMA.v1``. :func:`to_config` turns an object into a JSON-ready dict in
Thinc's config style and :func:`from_config` builds it back::

    {"@optimizers": "mxopt.ADAM.v1", "lr": 0.001, ...,
     "lr_scheduler": {"@schedules": "mxopt.LearningRate.Exp.v1", "lr": 0.1, ...}}

``from_config(to_config(x)) == x`` for every object whose options are plain
values (numbers, booleans, strings, lists, ``None``) or other registered
objects. Objects that wrap Python code (a schedule made from a callable or a
generator) cannot be written as a config; :func:`to_config` raises
:class:`ConfigError` for them. Checkpoints store their optimizer this way, so
loading one never runs code from the file.

The same configs can be written as text and read back: :func:`from_config`
also takes a config string or a file (Thinc-style ``.cfg``, TOML or JSON;
see :mod:`mxopt.persist.files`), and :func:`dumps` / :func:`save` write them::

    [optimizer]
    @optimizers = "mxopt.ADAM.v1"
    lr = 0.001

    [optimizer.lr_scheduler]
    @schedules = "mxopt.LearningRate.Cosine.v1"
    max_update = 1000
    base_lr = 0.001

Names outside the built-in table (:func:`mxopt.persist.registry.registered`) can be
added through the catalogue registries of :mod:`mxopt.persist.registry` (decorators or the
entry-point groups ``mxopt_optimizers``, ``mxopt_schedules``, ``mxopt_averaging``); the
built-in names always win. Errors name the path inside the config, e.g.
``optimizer.lr_scheduler.gamma``, and suggest close matches for unknown names
and options.
"""

from __future__ import annotations

import math
import os

import attrs

from mxopt.core.checks import shown
from mxopt.optimizers.base import AbstractOptimizer
from mxopt.persist import files
from mxopt.persist.registry import (
    KIND_KEYS,
    ConfigError,
    kind_of,
    known_names,
    lookup,
    options_of,
    registered,
    registry_name,
    suggestion,
    unknown_hint,
)

__all__ = [
    "ConfigError",
    "dumps",
    "from_config",
    "load",
    "lookup",
    "registered",
    "registry_name",
    "save",
    "to_config",
]

_KIND_LABELS = {"optimizers": "optimizer", "schedules": "schedule", "averaging": "averaging rule"}


def _fields(obj):
    """The init fields of an optimizer's options or of an attrs object, with values."""
    target = obj.opts if isinstance(obj, AbstractOptimizer) else obj
    return [(a.name, getattr(target, a.name)) for a in attrs.fields(type(target)) if a.init]


def to_config(obj, path: str = "config") -> dict:
    """``obj`` (optimizer, schedule or averaging rule) as a JSON-ready dict."""
    kind = kind_of(obj)
    if kind is None or not attrs.has(obj.opts if kind == "optimizers" else type(obj)):
        raise ConfigError(f"{path}: {shown(obj)} cannot be written as a config")
    config = {KIND_KEYS[kind]: registry_name(obj)}
    for name, value in _fields(obj):
        config[name] = _value_to_config(value, f"{path}.{name}")
    return config


def _value_to_config(value, path: str):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: {shown(value)} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_value_to_config(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind_of(value) is not None:
        return to_config(value, path)
    raise ConfigError(
        f"{path}: {shown(value)} (a {type(value).__name__}) cannot be written as a config; "
        f"only numbers, booleans, strings, lists, None and registered mxopt objects can"
    )


def from_config(config, path: str | None = None, *, section: str | None = None,
                extensions: bool = True):  # fmt: skip
    """Build the object a config describes (the inverse of :func:`to_config`).

    ``config`` is a dict as :func:`to_config` returns it, or a config as text
    (Thinc-style ``.cfg``, TOML or JSON) or a path to a file
    (:class:`os.PathLike`, or a string without ``=`` or a newline); see
    :func:`load`. A dict or file holding several sections is
    narrowed to ``section`` (a dotted path such as ``"training.optimizer"``);
    without one, a lone top-level object, or the one called ``optimizer``, is
    taken.

    Unknown names, unknown or missing options and invalid values raise
    :class:`ConfigError` naming the path inside the config, e.g.
    ``optimizer.lr_scheduler.gamma``; unknown names and options come with the
    closest known ones. ``extensions=False`` accepts built-in names only (no
    catalogue registries, no entry points). ``path`` is the name given to the
    top of the config in messages.
    """
    if isinstance(config, (str, os.PathLike)):
        return load(config, section=section, extensions=extensions)
    if not isinstance(config, dict):
        raise ConfigError(f"{path or 'config'}: expected a table (dict), got {shown(config)}")
    files.check_bounds(config, path or "config")
    if section is not None or not _is_promise(config):
        section = _find_section(config, section, path)
        for key in section.split("."):
            config = config[key]
        path = f"{path}.{section}" if path else section
    return _build(config, path or "config", extensions)


def _is_promise(value) -> bool:
    return isinstance(value, dict) and any(
        isinstance(key, str) and key.startswith("@") for key in value
    )


def _find_section(tree: dict, section: str | None, path: str | None) -> str:
    """The dotted path of the section to build in a dict of sections."""
    where = path or "config"
    if section is not None:
        node = tree
        for depth, key in enumerate(section.split(".")):
            if not isinstance(node, dict) or key not in node:
                done = ".".join(section.split(".")[:depth])
                options = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(
                    f"{where}: no section {shown(section)} (nothing called {shown(key)}"
                    f"{' in ' + repr(done) if done else ''}){suggestion(key, options)}"
                    f"{'; there: ' + ', '.join(map(str, options)) if options else ''}"
                )
            node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"{where}.{section}: expected a table (dict), got {shown(node)}")
        return section
    found = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and isinstance(key, str):
                dotted = f"{prefix}.{key}" if prefix else key
                if _is_promise(value):
                    found.append(dotted)
                else:
                    walk(value, dotted)

    walk(tree, "")
    preferred = [p for p in found if p.split(".")[-1] == "optimizer"]
    if len(preferred) == 1:
        return preferred[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"{where}: nothing to build; a config needs one of "
            f"{sorted(KIND_KEYS.values())} (at the top or in a section)"
        )
    raise ConfigError(
        f"{where}: several objects in this config ({', '.join(found)}); pass section=..."
    )


def _build(config: dict, path: str, extensions: bool):
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a table (dict), got {shown(config)}")
    keys = [key for key in config if isinstance(key, str) and key.startswith("@")]
    if len(keys) != 1:
        raise ConfigError(
            f"{path}: a config needs exactly one of {sorted(KIND_KEYS.values())}, got {keys}"
        )
    kind = next((k for k, v in KIND_KEYS.items() if v == keys[0]), None)
    if kind is None:
        raise ConfigError(
            f"{path}: unknown registry {shown(keys[0])}; expected one of "
            f"{sorted(KIND_KEYS.values())}{suggestion(keys[0], KIND_KEYS.values())}"
        )
    name = config[keys[0]]
    if not isinstance(name, str):
        raise ConfigError(f"{path}.{keys[0]}: expected a name (string), got {shown(name)}")
    target = lookup(kind, name, extensions=extensions)
    if target is None:
        known = known_names(kind, extensions=extensions)
        raise ConfigError(
            f"{path}: unknown {_KIND_LABELS[kind]} {shown(name)}{unknown_hint(name, known)}"
        )
    options, anything = options_of(target)
    arguments = {}
    for key, value in config.items():
        if key == keys[0]:
            continue
        if not anything and key not in options:
            raise ConfigError(
                f"{path}.{key}: unknown option of {name}{suggestion(str(key), options)} "
                f"(the options are: {', '.join(options) or 'none'})"
            )
        arguments[key] = _value_from_config(value, f"{path}.{key}", extensions)
    missing = [
        key
        for key, parameter in options.items()
        if parameter.default is parameter.empty and key not in arguments
    ]
    if missing:
        raise ConfigError(
            f"{path}: {name} needs option(s) {', '.join(map(repr, missing))}, "
            f"which the config does not give"
        )
    try:
        return target(**arguments)
    except (TypeError, ValueError) as error:
        message = str(error)
        field = next((key for key in arguments if f" {key} " in f" {message} "), None)
        where = f"{path}.{field}" if field else path
        raise ConfigError(f"{where}: {message}") from None


def _value_from_config(value, path: str, extensions: bool = True):
    if isinstance(value, dict):
        return _build(value, path, extensions)
    if isinstance(value, list):
        return [_value_from_config(v, f"{path}[{i}]", extensions) for i, v in enumerate(value)]
    return value


# -- text and files -------------------------------------------------------------------------


def load(source, section: str | None = None, *, extensions: bool = True):
    """Build the object a config describes.

    ``source`` is a dict, config text (Thinc-style, TOML or JSON; see
    :func:`mxopt.persist.files.parse`) or a file (an :class:`os.PathLike`, or a string without
    ``=`` or a newline; the suffix ``.toml``, ``.json`` or ``.cfg`` picks the
    format). ``section`` is the dotted path of the object (``"optimizer"``,
    ``"training.optimizer"``); without it the only object in the config, or
    the one in a section called ``optimizer``, is built. Errors are
    :class:`~mxopt.ConfigError` naming the path, prefixed by the file name.
    """
    data, where = files.read(source)
    try:
        return from_config(data, section=section, extensions=extensions)
    except ConfigError as error:
        if where:
            raise ConfigError(f"{where}{error}") from None
        raise


def dumps(obj, format: str = "cfg", *, section: str | None = "optimizer") -> str:
    """``obj`` (an mxopt object or a config dict) as config text.

    ``format``: ``"cfg"`` (Thinc-style: what Thinc, spaCy and confection read),
    ``"toml"`` or ``"json"``. The object goes in ``section`` (a dotted path;
    ``None`` is allowed for JSON only, giving the bare object). Nested objects
    (``lr_scheduler``, ...) become sub-sections; lists of objects stay inline.
    TOML has no ``null``: an option that is ``None`` is left out, which is only
    possible where ``None`` is its default (else :class:`~mxopt.ConfigError`).
    """
    config = obj if isinstance(obj, dict) else to_config(obj, section or "config")
    return files.dumps(config, format, section=section)


def save(obj, path, format: str | None = None, *, section: str | None = "optimizer") -> None:
    """Write ``obj`` as a config file (format from the suffix: ``.toml``, ``.json``, else
    Thinc-style ``.cfg``), atomically (a temporary file renamed over the target)."""
    if format is None:
        format = files.FILE_FORMATS.get(os.path.splitext(os.fspath(path))[1].lower(), "cfg")
    files.write_atomically(path, dumps(obj, format, section=section))
