"""Settings declared once, as dataclass fields: name, type, default, help, where they apply, their check.

A setting is a field of a config dataclass (the models' configs, :class:`tinyvae.models.config.VAEConfig`
and :class:`~tinyvae.models.config.AEConfig`, and the training's :class:`tinyvae.training.settings.TrainSettings`)
declared with :func:`setting`. Everything else is derived from that declaration:

* the command line's flag (``latent_dim`` -> ``--latent-dim``), its parser, its help with the default,
  and its choices (:func:`add_flags`);
* the check of a value's type and range, with one message naming the setting and what it accepts
  (:meth:`Setting.check`), for a flag, a keyword of ``tinyvae.build`` or a field read from a checkpoint;
* where it applies (``only``: the values of other settings it needs), so that a setting given to a model
  it does not apply to is refused, and one that was not given takes its ``off`` value (:func:`resolve`);
* the run's settings record in its checkpoint, and the model config built from it.

Adding a setting is one field declared with :func:`setting`, and its use. docs/architecture.md shows it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, NamedTuple

import numpy as np

from ..errors import SettingsError


@dataclass(frozen=True)
class Spec:
    """What a field's declaration says beyond its name, type and default.

    Attributes:
        help: the flag's help, without the default (which is added).
        choices: the accepted strings, for a ``str`` setting that takes one of a few.
        check: a test of a value already of the right type (a range); ``accepts`` says what it accepts.
        accepts: the words for ``check``, e.g. ``">= 1"`` or ``"in (0, 1)"``.
        only: ``((other setting, values), ...)``: the setting applies only where each other setting takes
            one of its values (``--beta`` only for the VAEs); :data:`ANY` among the values stands for any
            value but None (``--test-data`` only with ``--data``).
        off: the value the setting takes where it does not apply (``hidden`` is ``()`` for ``--arch conv``);
            None keeps the default.
        flag: False for a field that is not a command-line setting (a size read from the data).
    """

    help: str
    choices: tuple[str, ...] = ()
    check: Callable[[Any], bool] | None = None
    accepts: str = ""
    only: tuple[tuple[str, tuple], ...] = ()
    off: Any = None
    flag: bool = True


class _Any:
    """The value of :class:`Spec`'s ``only`` that stands for any value but None."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()


def _allows(allowed: tuple, value) -> bool:
    return any(value is not None if a is ANY else value == a for a in allowed)


def setting(default, help: str, **spec) -> Field:
    """A dataclass field declared as a setting (see :class:`Spec` for ``spec``'s keywords)."""
    if "only" in spec:
        spec["only"] = tuple((k, tuple(v)) for k, v in spec["only"].items())
    return field(default=default, metadata={"setting": Spec(help, **spec)})


KINDS = {bool: "bool", int: "int", float: "float", str: "str", tuple: "sizes", type(None): "path"}
WORDS = {"bool": "true or false", "int": "an int", "float": "a finite number", "str": "a string",
         "sizes": "a list of ints >= 1", "path": "a path or null"}


class Setting(NamedTuple):
    """One declared setting: its field's name and default, the kind of value it takes, and its :class:`Spec`."""

    name: str
    default: Any
    kind: str
    spec: Spec

    def label(self, flags: bool) -> str:
        """How messages name it: ``--latent-dim`` (a command line) or ``latent_dim`` (Python)."""
        return "--" + self.name.replace("_", "-") if flags else self.name

    def check(self, value, flags: bool = False):
        """``value`` checked and in its canonical type (a tuple for sizes, a float for an int given as one).

        Raises:
            SettingsError: a value of the wrong type, not one of the choices, or out of range; the message
                names the setting and says what it accepts.
        """
        kind, spec = self.kind, self.spec
        ok = {"bool": lambda v: isinstance(v, (bool, np.bool_)),
              "int": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)),
              "float": lambda v: isinstance(v, (int, float, np.integer, np.floating))
                                 and not isinstance(v, (bool, np.bool_)) and math.isfinite(v),
              "str": lambda v: isinstance(v, str),
              "sizes": lambda v: isinstance(v, (list, tuple)) and all(
                  isinstance(h, (int, np.integer)) and not isinstance(h, (bool, np.bool_)) and h >= 1 for h in v),
              "path": lambda v: v is None or isinstance(v, str)}[kind]
        if not ok(value):
            raise SettingsError(f"{self.label(flags)} must be {WORDS[kind]}, got {value!r}")
        value = {"bool": bool, "int": int, "float": float, "sizes": lambda v: tuple(int(h) for h in v)}.get(
            kind, lambda v: v)(value)
        if spec.choices and value not in spec.choices:
            raise SettingsError(f"{self.label(flags)} must be one of {', '.join(spec.choices)}, got {value!r}")
        if spec.check is not None and not spec.check(value):
            raise SettingsError(f"{self.label(flags)} must be {spec.accepts}, got {value!r}")
        return value

    def applies(self, values: dict) -> bool:
        """Whether the setting applies where the other settings have ``values``."""
        return all(other not in values or _allows(allowed, values[other]) for other, allowed in self.spec.only)

    def off_value(self):
        """The value where it does not apply."""
        return self.default if self.spec.off is None else self.spec.off

    def why_not(self, values: dict, flags: bool, declared: dict) -> str:
        """``"--beta does not apply to --model ae"``: the first other setting that rules it out."""
        other = next(o for o, allowed in self.spec.only if o in values and not _allows(allowed, values[o]))
        if values[other] is None:
            return f"{self.label(flags)} applies only with {declared[other].label(flags)}"
        return f"{self.label(flags)} does not apply to {declared[other].label(flags)} {values[other]}"


def declared(cls) -> dict[str, Setting]:
    """The settings a dataclass declares (its fields made with :func:`setting`), by name, in field order."""
    out = {}
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None:
            default = f.default if f.default is not MISSING else f.default_factory()
            out[f.name] = Setting(f.name, default, KINDS[type(default)], spec)
    return out


def check_fields(obj, settings: dict[str, Setting]) -> dict:
    """A dataclass instance's declared fields checked (:meth:`Setting.check`), in their canonical types; a
    field whose setting does not apply, left at its default, takes its ``off`` value. For the configs'
    ``__post_init__``.

    Raises:
        SettingsError: a bad value, or one other than the default for a setting that does not apply.
    """
    values = {name: s.check(getattr(obj, name)) for name, s in settings.items()}
    for name, s in settings.items():
        if not s.applies(values) and values[name] != s.off_value():
            if values[name] != s.default:
                raise SettingsError(s.why_not(values, False, settings))
            values[name] = s.off_value()
    return values


def resolve(given: dict, settings: dict[str, Setting], flags: bool = False, strict: bool = True) -> dict:
    """Every setting's value from those ``given``: each checked, the rest at their defaults, a setting that
    does not apply at its ``off`` value.

    Args:
        given: name -> value of the settings given (flags typed, ``tinyvae.build``'s keywords).
        settings: the declared settings, by name.
        flags: name settings by their flags in messages (a command line).
        strict: refuse a setting given where it does not apply; else it takes its ``off`` value (a record that
            holds every setting).

    Raises:
        SettingsError: an unknown name, a bad value, or (``strict``) a setting given where it does not apply
            (unless it is given its ``off`` value: ``--hidden ''`` for ``--model cae``).
    """
    unknown = sorted(set(given) - set(settings))
    if unknown:
        raise SettingsError(f"unknown setting{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; the settings are "
                            f"{', '.join(settings)}")
    values = {name: settings[name].check(v, flags) for name, v in given.items()}
    values = {name: values.get(name, s.default) for name, s in settings.items()}
    for name, s in settings.items():
        if not s.applies(values):
            if strict and name in given and values[name] != s.off_value():
                raise SettingsError(s.why_not(values, flags, settings))
            values[name] = s.off_value()
    return values


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"512,256"`` -> ``(512, 256)``; ``""`` -> ``()``: the command line's form of a list of sizes."""
    try:
        return tuple(int(h) for h in text.split(",") if h.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes sizes separated by commas (e.g. 512,256, or '' for none), "
                                         f"got {text!r}") from None


def add_flags(parser: argparse.ArgumentParser, settings: dict[str, Setting], group_of: Callable[[Setting], str]):
    """Add a flag per setting to ``parser``, in argument groups named by ``group_of``; every flag's default
    is None (not given), and its help ends with the setting's default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in settings.values():
        if not s.spec.flag:
            continue
        title = group_of(s)
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        shown = {"sizes": lambda d: ",".join(map(str, d)) or "none", "bool": lambda d: "on" if d else "off",
                 "path": lambda d: d or "none"}.get(s.kind, str)(s.default)
        help_text = s.spec.help if "(default" in s.spec.help else f"{s.spec.help} (default {shown})"
        if s.kind == "bool":
            groups[title].add_argument(s.label(True), dest=s.name, action="store_true", default=None, help=help_text)
            continue
        kind = {"int": int, "float": float, "str": str, "sizes": parse_sizes, "path": str}[s.kind]
        groups[title].add_argument(s.label(True), dest=s.name, type=kind, default=None,
                                   choices=s.spec.choices or None, help=help_text,
                                   metavar="SIZES" if s.kind == "sizes" else None)
