"""How each :class:`~simulations.config.SimulationConfig` field appears on the command line.

The config dataclass is the one source of every option's default: each field carries a
:class:`CliOption` in its metadata (flags, help, group, how to parse the text), and
:func:`add_config_arguments` builds the argparse options from the fields, with the field's
default as the option's default and in its help. :func:`config_kwargs` reads the parsed
options back into constructor arguments. Nothing here repeats a default.

A few fields are set in ``fortis matrix`` by a grid option instead of a flag (``--attacks``
for ``attack``, ``--f`` for ``byzantine`` ...); their :attr:`CliOption.grid` names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMANDS",
    "CliOption",
    "add_config_arguments",
    "cli_option",
    "config_kwargs",
    "option",
]

#: The subcommands that build a :class:`~simulations.config.SimulationConfig` from options.
COMMANDS: tuple[str, ...] = ("simulate", "matrix")

#: Argument groups of ``--help``, in the order they are shown.
GROUPS: tuple[str, ...] = ("data", "federation", "threat model", "defence", "privacy", "output")


@dataclass(frozen=True)
class CliOption:
    """One config field's command-line option.

    ``parse`` turns one argument's text into a value (argparse's ``type``); ``to_value`` turns
    what argparse collected into the field's value (for example ``K=V`` items into a dict).
    ``action`` is ``"store"``, ``"append"``, ``"store_true"`` or ``"store_false"`` (a flag that
    turns a field whose default is true off, such as ``--independent``). ``default_text``
    replaces the default in the help where the value alone says too little (``None`` meaning
    "derived"). ``grid`` names the ``fortis matrix`` option that sets the field there instead
    of ``flags``.
    """

    flags: tuple[str, ...]
    help: str
    group: str
    parse: Callable[[str], Any] | None = None
    to_value: Callable[[Any], Any] | None = None
    action: str = "store"
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    default_text: str | None = None
    grid: str | None = None

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"CliOption {self.flags}: group must be one of {GROUPS}")

    @property
    def dest(self) -> str:
        return self.flags[0].lstrip("-").replace("-", "_")

    def in_command(self, command: str) -> bool:
        """Whether ``command`` takes this field as a flag (not through a grid option)."""
        return command == "simulate" or self.grid is None


def option(default: Any = dataclasses.MISSING, *flags: str, **cli: Any) -> Any:
    """A dataclass field with ``default`` (a dict or tuple default is copied per instance)
    and its :class:`CliOption` built from ``flags`` and ``cli``."""
    meta = {"cli": CliOption(flags=flags, **cli)}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cli_option(field: dataclasses.Field) -> CliOption | None:
    """The field's command-line option, or ``None`` for a field with none."""
    return field.metadata.get("cli")


def _default_text(field: dataclasses.Field, opt: CliOption) -> str:
    if opt.default_text is not None:
        return opt.default_text
    if field.default_factory is not dataclasses.MISSING or field.default in ((), None):
        return "none"
    return str(field.default)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add an option for every config field that ``command`` takes as a flag, in groups.

    Each option's default is the field's default and its help ends with ``(default: ...)``.
    """
    from simulations.config import SimulationConfig

    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for field in dataclasses.fields(SimulationConfig):
        opt = cli_option(field)
        if opt is None or not opt.in_command(command):
            continue
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "help": f"{opt.help} (default: {_default_text(field, opt)})".replace("%", "%%"),
        }
        if opt.action == "append":
            kwargs.update(action="append", default=[])
        elif opt.action in ("store_true", "store_false"):
            kwargs.update(action=opt.action, default=_field_default(field))
        else:
            kwargs["default"] = _field_default(field)
        if opt.parse is not None:
            kwargs["type"] = opt.parse
        if opt.choices is not None:
            kwargs["choices"] = opt.choices
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        groups[opt.group].add_argument(*opt.flags, **kwargs)


def config_kwargs(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The constructor arguments of the fields ``command`` took as flags, from ``args``.

    Raises :class:`~simulations.errors.ConfigError` for a malformed ``K=V`` item or spec.
    """
    from simulations.config import SimulationConfig

    out: dict[str, Any] = {}
    for field in dataclasses.fields(SimulationConfig):
        opt = cli_option(field)
        if opt is None or not opt.in_command(command):
            continue
        value = getattr(args, field.name)
        out[field.name] = opt.to_value(value) if opt.to_value is not None else value
    return _expand_specs(out)


def _expand_specs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``--attack NAME:K=V`` and ``--defence PRE+RULE:K=V`` carry parameters (and the
    defence pre-aggregators) with the name: move them to their own fields, after what
    ``--attack-param``, ``--defence-param`` and ``--pre`` gave."""
    from simulations.specs import parse_attack, parse_defence

    if "attack" in kwargs:
        name, params = parse_attack(kwargs["attack"], "--attack")
        kwargs["attack"] = name
        kwargs["attack_params"] = merge_params("--attack", kwargs["attack_params"], params)
    if "defence" in kwargs:
        pre, rule, params = parse_defence(kwargs["defence"])
        kwargs["defence"] = rule
        kwargs["defence_params"] = merge_params("--defence", kwargs["defence_params"], params)
        kwargs["pre"] = (*kwargs["pre"], *pre)
    return kwargs


def absolute_path(path: str | None) -> str | None:
    """A path as given on the command line, made absolute (``None`` stays ``None``)."""
    return None if path is None else os.path.abspath(path)


def merge_params(what: str, *parts: Mapping[str, Any]) -> dict[str, Any]:
    """Union of parameter dicts; a key given twice with different values is a
    :class:`~simulations.errors.ConfigError` naming ``what``."""
    from simulations.errors import ConfigError

    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in out and out[key] != value:
                raise ConfigError(f"{what}: {key} is given twice ({out[key]!r} and {value!r})")
            out[key] = value
    return out
