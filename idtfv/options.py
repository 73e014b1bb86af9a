"""Command-line options generated from a frozen options dataclass (``IDTParams``, ``FlowOptions``, ...).

A dataclass declares each of its fields with :func:`option`, which keeps the default and adds what a command line
needs as field metadata: the help text, the flag (default ``--`` + the name with ``_`` -> ``-``), a metavar, the
allowed choices and whether the option is "advanced" (listed in a second group). A command then adds the
options of the fields it offers with :func:`add_params_options` and builds the dataclass from the parsed
arguments with :func:`params_from_args`, so the options, their choices and the defaults shown in ``--help`` come
from the dataclass alone.

Every generated option defaults to ``None`` ("not given"): only the options the user typed reach the dataclass,
and the other fields keep the chosen preset's values. The validation of the dataclass raises
:func:`field_error`'s :class:`~idtfv.errors.ParameterError`, which names the field; :func:`params_from_args`
turns it into a message that names the command-line option instead.

This module is part of the base and imports nothing but the standard library, so that building a parser
(``--help``) stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from idtfv.errors import ParameterError

__all__ = ["local_workers", "usable_cpus", "JobsCappedWarning", "option", "option_flag", "field_error",
           "add_params_options", "params_from_args", "choices_of",
           "check_jobs"]

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def option(default: Any, help: str, *, flag: str | None = None, metavar: str | None = None,  # noqa: A002
           choices: tuple | None = None, advanced: bool = False, type: Callable | None = None,  # noqa: A002
           none: str | None = None) -> Any:
    """A dataclass field with a default and its command-line metadata.

    Parameters
    ----------
    default : object
        The field's default (immutable).
    help : str
        One-line help text of the option (the default is appended by :func:`add_params_options`).
    flag : str, optional
        The option string; default ``"--" + name.replace("_", "-")``. A ``bool`` field becomes the pair
        ``--flag`` / ``--no-flag``.
    metavar : str, optional
        The value's name in ``--help``.
    choices : tuple, optional
        The allowed values (also what the dataclass's validation checks, see :func:`choices_of`).
    advanced : bool
        List the option in the command's "advanced" group.
    type : callable, optional
        Converts the typed string; default from the field's annotation (``int``, ``float``, ``str``).
    none : str, optional
        How ``--help`` describes a ``None`` default (e.g. ``"keep the size"``).
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "choices": choices, "advanced": advanced,
            "type": type, "none": none}
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


class JobsCappedWarning(UserWarning):
    """More local worker processes were asked for than this process may use CPUs: :func:`local_workers` used
    one per CPU."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one, else ``os.cpu_count()``)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_workers(jobs: int, tasks: int, *, name: str = "jobs") -> int:
    """Worker processes a local pool starts for ``tasks`` tasks: ``jobs`` (-1: one per usable CPU,
    :func:`usable_cpus`), at most one per task and at most one per usable CPU, but never fewer than 2 for a
    ``jobs`` >= 2 (separate processes also keep a video that crashes its worker from ending the run).

    Each worker is a whole process (its own interpreter, NumPy, OpenCV and Numba, ~0.2 GB) running CPU-bound work:
    more workers than CPUs only share the cores and multiply the memory, and ``--jobs 100000`` started that many
    processes. Asking for more is said once (:class:`JobsCappedWarning`).
    """
    jobs = check_jobs(jobs, name=name)
    cpus = usable_cpus()
    cap = max(cpus, 2)
    if jobs > cap:
        import warnings

        warnings.warn(f"{name}={jobs} is more than the {cpus} CPU(s) this process may use; using {cap} worker "
                      "processes (more would only share the cores and multiply the memory)", JobsCappedWarning,
                      stacklevel=2)
    return max(1, min(cpus if jobs == -1 else min(jobs, cap), tasks))


def check_jobs(jobs, *, name: str = "jobs") -> int:
    """``jobs`` (worker processes: a positive integer, or -1 for every core), or a :class:`ParameterError` naming
    ``name`` (``"--jobs"`` from a command line). The one rule of the runner, the dataset probe and ``idtfv dataset``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs == 0 or jobs < -1:
        raise ParameterError(f"{name} must be a positive integer or -1 (all cores), got {jobs!r}")
    return jobs


def option_flag(field: dataclasses.Field) -> str:
    """The option string of a dataclass field (``--track-length`` for ``track_length``)."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def choices_of(cls) -> dict[str, tuple]:
    """``{field name: allowed values}`` of the fields of ``cls`` declared with ``choices``."""
    return {f.name: tuple(f.metadata["choices"]) for f in dataclasses.fields(cls) if "choices" in f.metadata}


def field_error(owner: str, name: str, expected: str, value: Any, default: Any) -> ParameterError:
    """The :class:`ParameterError` of a field out of range: ``"Owner.name: expected E, got V; ..."``.

    The error keeps ``field``, ``expected`` and ``value`` as attributes, from which :func:`params_from_args`
    words the same error in terms of the command-line option.
    """
    exc = ParameterError(f"{owner}.{name}: expected {expected}, got {value!r}; "
                         f"fix the option or use the default ({default!r})")
    exc.field, exc.expected, exc.value = name, expected, value
    return exc


def _value_type(field: dataclasses.Field) -> Callable:
    if "type" in field.metadata:
        return field.metadata["type"]
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    parts = [p.strip() for p in annotation.split("|") if p.strip() != "None"]
    if len(parts) != 1 or parts[0] not in _TYPES:
        raise TypeError(f"{field.name}: cannot make an option of a field annotated {annotation!r}; "
                        "give option(..., type=...)")
    return _TYPES[parts[0]]


def _shown(value: Any, field: dataclasses.Field) -> str:
    if value is None:
        return field.metadata.get("none", "none")
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "''"


def _defaults_text(field: dataclasses.Field, presets: Mapping[str, Any]) -> str:
    values = [(name, getattr(params, field.name)) for name, params in presets.items()]
    first = values[0][1]
    text = f"default: {_shown(first, field)}"
    for name, value in values[1:]:
        if value != first:
            text += f"; --preset {name}: {_shown(value, field)}"
    return text


def _offered(cls, fields: Iterable[str] | None) -> list[dataclasses.Field]:
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    if fields is None:
        return [f for f in by_name.values() if "help" in f.metadata]
    unknown = [name for name in fields if name not in by_name]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    missing = [name for name in fields if "help" not in by_name[name].metadata]
    if missing:
        raise TypeError(f"{cls.__name__} field(s) {', '.join(missing)} have no option metadata (help)")
    return [by_name[name] for name in fields]


def add_params_options(parser: argparse.ArgumentParser, cls, *, fields: Iterable[str] | None = None,
                       presets: Mapping[str, Callable[[], Any]] | None = None, title: str | None = None,
                       advanced_title: str | None = None, group=None,
                       helps: Mapping[str, str] | None = None) -> None:
    """Add one option per field of the dataclass ``cls``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The (sub)command's parser.
    cls : dataclass type
        Its fields are declared with :func:`option`.
    fields : iterable of str, optional
        The fields offered, in this order; default every field with option metadata.
    presets : mapping of str to callable, optional
        ``{preset name: factory}`` (e.g. ``{"default": IDTParams, "fast": IDTParams.fast}``): ``--help`` shows
        the first preset's default of each option and where another preset differs. Default ``{"default": cls}``.
    title, advanced_title : str, optional
        Titles of the argument groups of the options and of the advanced ones (default: ``cls``'s name).
    group : argparse argument group, optional
        An existing group of ``parser`` to add the (not advanced) options to, instead of a new one.
    helps : mapping of str to str, optional
        ``{field: help}`` replacing a field's help text in this command.

    Each option's ``dest`` is the field's name and its default ``None`` (not given).
    """
    presets = {"default": cls} if presets is None else presets
    shown = {name: factory() for name, factory in presets.items()}
    helps = dict(helps or {})
    offered = _offered(cls, fields)
    groups: dict[bool, Any] = {} if group is None else {False: group}
    for field in offered:
        advanced = bool(field.metadata.get("advanced", False))
        if advanced not in groups:
            name = advanced_title if advanced else title
            groups[advanced] = parser.add_argument_group(
                name or (f"advanced {cls.__name__} options" if advanced else f"{cls.__name__} options"))
        text = helps.get(field.name, field.metadata["help"])
        text = f"{text} ({_defaults_text(field, shown)})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": text}
        value_type = _value_type(field)
        if value_type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = value_type
            if "choices" in field.metadata:
                kwargs["choices"] = tuple(field.metadata["choices"])
            if "metavar" in field.metadata:
                kwargs["metavar"] = field.metadata["metavar"]
        groups[advanced].add_argument(option_flag(field), **kwargs)


def params_from_args(args: argparse.Namespace, cls, *, fields: Iterable[str] | None = None,
                     preset: Callable[..., Any] | None = None) -> Any:
    """The dataclass ``cls`` built from the options of ``fields`` the user gave, over a preset.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`add_params_options` (same ``fields``).
    cls : dataclass type
    fields : iterable of str, optional
        The fields offered as options; default every field with option metadata.
    preset : callable, optional
        ``preset(**given)`` builds the result (e.g. ``IDTParams.fast``); default ``cls``.

    Raises
    ------
    idtfv.errors.ParameterError
        A value out of range, worded with the command-line option (``--track-length: expected ...``) when the
        field is one of the command's options.
    """
    offered = {f.name: f for f in _offered(cls, fields)}
    given = {name: getattr(args, name) for name in offered if getattr(args, name, None) is not None}
    factory = cls if preset is None else preset
    try:
        return factory(**given)
    except ParameterError as exc:
        name = getattr(exc, "field", None)
        if name not in offered:
            raise
        flag = option_flag(offered[name])
        value = exc.value
        if name in given:
            where = f"leave {flag} out for the default ({_shown(getattr(factory(), name), offered[name])})"
            if offered[name].metadata.get("choices"):
                where = "choose one of " + ", ".join(map(str, offered[name].metadata["choices"]))
            got = f"got {_given(value)}"
        else:
            where = f"give {flag} a value that fits the other options"
            got = f"got {_given(value)}, the default"
        raise ParameterError(f"{flag}: expected {exc.expected}, {got} ({cls.__name__}.{name}); {where}") from None


def _given(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if isinstance(value, str) else str(value)
