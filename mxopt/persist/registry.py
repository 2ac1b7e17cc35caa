"""Function registries and config files: mxopt objects by versioned name.

Every optimizer, schedule and averaging rule has a versioned name (``mxopt.ADAM.v1``,
``mxopt.LearningRate.Exp.v1``, ``mxopt.EMA.v1``); :func:`registered` is the one source
of those names. Three `catalogue <https://github.com/explosion/catalogue>`_ registries
(the registry library Thinc and spaCy use) hold them too, and whatever other packages
add; they are made on first use (``import mxopt`` does not import catalogue):

* :data:`optimizers` -- ``mxopt.ADAM.v1``, ``mxopt.SGD.v1``, ...
* :data:`schedules` -- ``mxopt.LearningRate.Cosine.v1``, ``mxopt.Momentum.Fixed.v1``, ...
* :data:`averaging` -- ``mxopt.EMA.v1``, ``mxopt.Polyak.v1``

Other packages add their own with the decorators (``@mxopt.registry.schedules(
"mypkg.Warm.v1")`` on an attrs class or a factory function) or through the
entry-point groups ``mxopt_optimizers``, ``mxopt_schedules`` and
``mxopt_averaging``. Built-in names cannot be replaced. Only registered
*classes* can be written back as configs (:func:`mxopt.to_config`).

Turning objects into configs and back is :mod:`mxopt.persist.config`; config text and
files are :mod:`mxopt.persist.files`.
"""

from __future__ import annotations

import difflib
import functools
import inspect

import attrs

from mxopt.core.checks import shown
from mxopt.core.schedule import AbstractSchedule
from mxopt.optimizers import OPTIMIZERS
from mxopt.optimizers.averaging import EMA, Polyak
from mxopt.optimizers.base import AbstractOptimizer
from mxopt.schedules import learning_rate, momentum

__all__ = [
    "ConfigError",
    "KIND_KEYS",
    "find",
    "get",
    "known_names",
    "unknown_hint",
    "lookup",
    "name_of",
    "names",
    "registered",
    "registry_name",
]

#: The key naming the registry of each kind of object (Thinc's convention).
KIND_KEYS = {"optimizers": "@optimizers", "schedules": "@schedules", "averaging": "@averaging"}


VERSION = "v1"


class ConfigError(ValueError):
    """A configuration that cannot be written or built; the message gives its path."""


def registered() -> dict:
    """``{kind: {versioned name: class}}`` for every built-in class, and every optimizer
    registered with :func:`mxopt.register` (the table is made again when that grows)."""
    return _registered(len(OPTIMIZERS))


@functools.lru_cache(maxsize=1)
def _registered(optimizers: int) -> dict:
    table = {"optimizers": {}, "schedules": {}, "averaging": {}}
    for name, cls in OPTIMIZERS.items():
        table["optimizers"][f"mxopt.{name}.{VERSION}"] = cls
    for module in (learning_rate, momentum):
        for name in module.__all__:
            cls = getattr(module, name)
            if inspect.isclass(cls) and issubclass(cls, AbstractSchedule) and attrs.has(cls):
                table["schedules"][f"mxopt.{cls.namespace}.{cls.__name__}.{VERSION}"] = cls
    for cls in (EMA, Polyak):
        table["averaging"][f"mxopt.{cls.__name__}.{VERSION}"] = cls
    return table


def kind_of(obj) -> str | None:
    """``"optimizers"``, ``"schedules"`` or ``"averaging"``: the registry ``obj`` belongs in."""
    if isinstance(obj, AbstractOptimizer):
        return "optimizers"
    if isinstance(obj, AbstractSchedule):
        return "schedules"
    if isinstance(obj, (EMA, Polyak)):
        return "averaging"
    return None


# -- the catalogue registries, made on first use --------------------------------------------

_KINDS = ("optimizers", "schedules", "averaging")


@functools.cache
def _catalogue_registries() -> dict:
    import catalogue

    return {kind: catalogue.create("mxopt", kind, entry_points=True) for kind in _KINDS}


_synced: set = set()  # the built-in names already in the catalogue registries


def _registries() -> dict:
    """The catalogue registries, holding every built-in name (added as the table grows)."""
    made = _catalogue_registries()
    for kind, table in registered().items():
        for name, cls in table.items():
            if (kind, name) not in _synced:
                made[kind].register(name, func=cls)
                _synced.add((kind, name))
    return made


def __getattr__(name: str):
    # mxopt.registry.optimizers / .schedules / .averaging (decorators for other packages:
    # entry-point groups mxopt_optimizers, ...) and REGISTRIES, built on first access
    if name in _KINDS:
        return _registries()[name]
    if name == "REGISTRIES":
        return _registries()
    raise AttributeError(f"module {shown(__name__)} has no attribute {shown(name)}")


def _registry(kind: str):
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {shown(kind)}")
    return _registries()[kind]


def find(kind: str, name: str):
    """The class or factory registered as ``name`` in ``kind``, or ``None``."""
    import catalogue

    found = registered()[kind].get(name) if kind in _KINDS else None
    if found is not None:
        return found
    registry = _registry(kind)
    try:
        if name in registry:
            return registry.get(name)
    except catalogue.RegistryError:
        return None
    return None


def get(kind: str, name: str):
    """Like :func:`find`, but an unknown name raises :class:`ConfigError` with the closest
    known names."""
    found = find(kind, name)
    if found is None:
        known = names(kind)
        raise ConfigError(f"unknown {kind} name {shown(name)}{unknown_hint(name, known)}")
    return found


def names(kind: str) -> list[str]:
    """Every name registered in ``kind`` (built-in, decorated, entry points), sorted."""
    return sorted(set(registered()[kind]) | set(_registry(kind).get_all()))


def name_of(cls) -> str | None:
    """The name a class is registered under in any of the registries, or ``None``."""
    for registry in _registries().values():
        for name, registered_cls in registry.get_all().items():
            if registered_cls is cls:
                return name
    return None


def registry_name(obj) -> str:
    """The versioned registry name of an object or class, e.g. ``mxopt.SGD.v1``.

    Classes registered by other packages are found once the catalogue registries
    exist (after their first use).
    """
    cls = obj if inspect.isclass(obj) else type(obj)
    for table in registered().values():
        for name, registered_cls in table.items():
            if registered_cls is cls:
                return name
    if _catalogue_registries.cache_info().currsize:
        name = name_of(cls)
        if name is not None:
            return name
    raise ConfigError(f"{cls.__module__}.{cls.__qualname__} is not a registered mxopt class")


def lookup(kind: str, name: str, *, extensions: bool = True):
    """What ``name`` builds in registry ``kind`` (``"optimizers"``, ``"schedules"``,
    ``"averaging"``), or ``None``.

    The built-in table (:func:`registered`) is searched first; then, with
    ``extensions``, the catalogue registries (names registered with their decorators
    or installed through the entry-point groups ``mxopt_optimizers``,
    ``mxopt_schedules``, ``mxopt_averaging``).
    """
    found = registered()[kind].get(name)
    if found is not None or not extensions:
        return found
    try:
        return find(kind, name)
    except ImportError:  # catalogue is not installed: built-in names only
        return None


def known_names(kind: str, *, extensions: bool = True) -> list[str]:
    """Every name :func:`lookup` knows in registry ``kind``, sorted."""
    if extensions:
        try:
            return names(kind)
        except ImportError:
            pass
    return sorted(registered()[kind])


def close_matches(word: str, candidates) -> list[str]:
    """Up to three candidates close to ``word`` (case-insensitive).

    A registry name (``mxopt.AdamW.v1``) also matches by the part between ``mxopt.`` and
    the version, or by its last word: ``"AdamW"`` or ``"adamw"`` finds ``mxopt.AdamW.v1``,
    ``"Exp"`` finds ``mxopt.LearningRate.Exp.v1``.
    """
    by_lower = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    lower = word.lower()
    by_short = {}  # "adamw", "learningrate.exp", "exp" -> the registry names
    for key, candidate in by_lower.items():
        short = _short_name(key)
        if short is not None:
            for part in {short, short.rsplit(".", 1)[-1]}:
                by_short.setdefault(part, []).append(candidate)
    found = list(by_short.get(_short_name(lower) or lower, []))
    if not found:
        found = [by_lower[m] for m in _difflib_matches(lower, list(by_lower))]
    if not found and by_short:
        for match in _difflib_matches(_short_name(lower) or lower, list(by_short)):
            found += by_short[match]
    return list(dict.fromkeys(found))[:3]


def _short_name(name: str) -> str | None:
    """``"adamw"`` of ``"mxopt.adamw.v1"``; ``None`` for a name not of that form."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "mxopt" and parts[-1][:1] == "v" and parts[-1][1:].isdigit():
        return ".".join(parts[1:-1])
    return None


def _difflib_matches(word: str, candidates: list[str]) -> list[str]:
    # difflib's ratio is 2 * matches / (len(a) + len(b)), so a word over 7/3 times the
    # longest candidate cannot reach the 0.6 cutoff: skip the (quadratic) search.
    if len(word) * 3 > 7 * max(map(len, candidates), default=0):
        return []
    return difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)


def unknown_hint(word: str, known) -> str:
    """What follows "unknown name": the closest known names when some are close (the
    whole list, dozens long, would bury them), else every known name."""
    return suggestion(word, known) or f" (known: {', '.join(known)})"


def suggestion(word: str, candidates) -> str:
    """``"; did you mean 'x' or 'y'?"`` with :func:`close_matches`, or ``""``."""
    matches = close_matches(word, candidates)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"


def options_of(target) -> tuple[dict, bool]:
    """``({option: inspect.Parameter}, takes_any_keyword)`` of a class or factory."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, True
    options, anything = {}, False
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            anything = True
        elif parameter.kind is not parameter.VAR_POSITIONAL and name != "state":
            if parameter.default is attrs.NOTHING:  # an attrs field without a default
                parameter = parameter.replace(default=parameter.empty)
            options[name] = parameter
    return options, anything
