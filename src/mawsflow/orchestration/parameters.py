"""Pipeline parameters from the command line: `--param name=value`, typed by the pipeline.

A value is read as the type the pipeline declares for its parameter (string, integer, float,
boolean, or a JSON/YAML list or mapping), so a wrong name, a missing required parameter or a
value of the wrong type is an error naming the parameter before anything is uploaded or run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from kfp.dsl.structures import ComponentSpec


class ParameterError(ValueError):
    """A pipeline argument that the pipeline cannot take."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # kfp's spelling: String, Integer, Float, Boolean, List[...], Dict[...]
    required: bool
    default: Any = None


def declared_parameters(spec: ComponentSpec) -> dict[str, Parameter]:
    """The pipeline's parameters, in its signature's order."""
    return {
        name: Parameter(name, str(inp.type), not inp.optional, inp.default)
        for name, inp in (spec.inputs or {}).items()
    }


def _convert(parameter: Parameter, text: str) -> Any:
    kind = parameter.type.split("[", 1)[0]
    if kind == "String":
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{parameter.name}={text!r}: not a value ({exc})") from None
    expected: dict[str, tuple[type, ...]] = {
        "Integer": (int,),
        "Float": (int, float),
        "Boolean": (bool,),
        "List": (list,),
        "Dict": (dict,),
    }
    types = expected.get(kind)
    if types is None:
        raise ParameterError(
            f"{parameter.name}: parameters of type {parameter.type} are not supported"
        )
    if not isinstance(value, types) or (kind in ("Integer", "Float") and isinstance(value, bool)):
        raise ParameterError(
            f"{parameter.name}={text!r}: expected {parameter.type.lower()}, got "
            f"{type(value).__name__}"
        )
    return float(value) if kind == "Float" else value


def parse_arguments(
    spec: ComponentSpec,
    texts: Iterable[str],
    defaults: Mapping[str, Any] | None = None,
    *,
    complete: bool = True,
) -> dict[str, Any]:
    """`name=value` texts (later ones win) over `defaults`, checked against the pipeline.
    Returns only the arguments given; with `complete` (arguments for a run), every required
    parameter must be among them."""
    declared = declared_parameters(spec)
    arguments = dict(defaults or {})
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"--param {text!r}: expected name=value")
        if name not in declared:
            raise ParameterError(
                f"--param {name}: the pipeline has no such parameter; it has {', '.join(declared)}"
            )
        arguments[name] = _convert(declared[name], value)
    missing = [p.name for p in declared.values() if p.required and p.name not in arguments]
    if complete and missing:
        raise ParameterError(
            "missing required pipeline parameter(s): "
            + ", ".join(missing)
            + " (give each with --param name=value)"
        )
    return arguments
