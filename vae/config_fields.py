"""Dotted paths through a tree of config sections: the flat view, the key lists in error
messages, and what one leaf accepts (used to check search spaces before a sweep starts).

Every function takes the root section class, so this module does not import the schema."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ValidationError

from vae.config_base import ConfigError


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def format_validation_error(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    lines = [f"{source}: {exc.error_count()} invalid config value(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            known = ", ".join(_known_keys(root, parent))
            lines.append(f"  {key}: unknown key (known keys{' of ' + parent if parent else ''}: {known})")
        else:
            got = err.get("input")
            lines.append(f"  {key}: {err['msg']} (got {got!r})")
    return "\n".join(lines)


def _known_keys(root: type[BaseModel], parent: str) -> list[str]:
    model = root
    for part in [p for p in parent.split(".") if p]:
        field = model.model_fields.get(part)
        sub = _section_type(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


@dataclass(frozen=True)
class FieldSpec:
    """What one dotted path of the schema accepts."""

    path: str
    annotation: Any
    kind: Literal["float", "int", "bool", "str", "choice", "list", "other"]
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


def field_spec(root: type[BaseModel], path: str) -> FieldSpec:
    """The spec of the leaf at ``path`` under ``root``; ConfigError naming the first unknown part
    otherwise."""
    model = root
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        where = ".".join(parts[:i]) or "<top level>"
        if field is None:
            raise ConfigError(
                f"{path!r}: no key {part!r} under {where} (known: {', '.join(model.model_fields)})"
            )
        sub = _section_type(field.annotation)
        if i == len(parts) - 1:
            if sub is not None:
                raise ConfigError(f"{path!r} is a section, not a value (keys: {', '.join(sub.model_fields)})")
            return _spec_of(path, field)
        if sub is None:
            raise ConfigError(f"{path!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        model = sub
    raise AssertionError("unreachable")


def _spec_of(path: str, field: Any) -> FieldSpec:
    annotation = field.annotation
    bounds: dict[str, float] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(meta, name)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return FieldSpec(path, annotation, "choice", choices=typing.get_args(annotation), **bounds)
    if annotation is bool:
        kind = "bool"
    elif annotation is int:
        kind = "int"
    elif annotation is float:
        kind = "float"
    elif annotation is str or (origin in (typing.Union, types.UnionType) and str in typing.get_args(annotation)):
        kind = "str"
    elif origin in (list, tuple):
        kind = "list"
        # a list of names (adversarial.discriminators): the names each element may take
        (item, *rest) = typing.get_args(annotation) or (None,)
        if not rest and typing.get_origin(item) is Literal:
            return FieldSpec(path, annotation, kind, choices=typing.get_args(item), **bounds)
    else:
        kind = "other"
    return FieldSpec(path, annotation, kind, **bounds)
