"""Schemas of edgekit's own files (targets, profiles, the project file): pydantic v2 models whose errors read
as edgekit's.

Rules:
1. A schema is a `Schema` subclass: a pydantic model that forbids unknown keys and is frozen. A field's
   annotation carries a `Key(types, rule)`: the TOML types the value may have and its rule, checked before
   pydantic's own (strict) type check, so the message says what the file got and what it may hold.
2. A rule is None (the type only), a tuple of strings (one of them), a `(low, high)` tuple (a range; None is
   unbounded) or a callable taking the value and returning it converted (a tuple, a table). A float is
   always finite. A rule's error is an `invalid(template)`, `{key}` standing for the key's name.
3. `validate(schema, table, path, where)` returns the model, or raises one `UsageError` (exit 2): the
   first problem in the table's order, naming the file (`path`) and the key (`where` is its prefix, such
   as "budgets."), an unknown key with the nearest valid one, a missing required key.
4. A runtime's own target keys (`Runtime.extra_target_keys`: key -> `(types, rule)`, as a `Key` takes
   them) extend the target schema (`extend`, `key_fields`): a runtime adds keys without editing config.
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Annotated, Any, Callable, Mapping, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticCustomError

from .errors import UsageError

KEY = "{key}"  # stands for the key's name (with its prefix) in a rule's message


class Schema(BaseModel):
    """Base of every file schema (rule 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def given(self) -> dict[str, Any]:
        """The keys the file set, validated and converted (unset ones keep the record's defaults)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


def invalid(template: str) -> PydanticCustomError:
    """A rule's error (rule 2): `template` is the message, `{key}` the key's name."""
    return PydanticCustomError("edgekit", template)


def nearest(key: str, valid: list[str], what: str = "keys") -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid {what}: {', '.join(sorted(valid))})"


def _check(types: tuple[type, ...], rule: Any, value: Any) -> Any:
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise invalid(f"'{KEY}' must be {' or '.join(t.__name__ for t in types)}, not {value!r}")
    if callable(rule):
        value = rule(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"'{KEY}' must be a finite number, not {value!r}")
    if isinstance(rule, tuple) and rule and isinstance(rule[0], str):
        if value not in rule:
            raise invalid(f"'{KEY}' must be one of {', '.join(rule)}, not {value!r}")
    elif isinstance(rule, tuple):
        low, high = rule
        if (low is not None and value < low) or (high is not None and value > high):
            raise invalid(f"'{KEY}' = {value} is out of range [{low}, {high if high is not None else '∞'}]")
    return value


def Key(types: tuple[type, ...], rule: Any = None) -> BeforeValidator:
    """A field's TOML types and rule (rules 1, 2)."""
    return BeforeValidator(functools.partial(_check, types, rule))


# The field types the schemas use: the value's Python type (or None, an unset key's default) with its Key.
Text = Annotated[Optional[str], Key((str,))]
Flag = Annotated[Optional[bool], Key((bool,))]


def OneOf(*choices: str) -> Any:
    return Annotated[Optional[str], Key((str,), choices)]


def Whole(low: int | None = None, high: int | None = None) -> Any:
    return Annotated[Optional[int], Key((int,), (low, high))]


def Number(low: float | None = None, high: float | None = None) -> Any:
    return Annotated[Optional[float], Key((float, int), (low, high))]


def Rule(kind: type, types: tuple[type, ...], rule: Callable[[Any], Any]) -> Any:
    return Annotated[Optional[kind], Key(types, rule)]


def key_fields(keys: Mapping[str, tuple[tuple[type, ...], Any]]) -> dict[str, Any]:
    """Fields from `(types, rule)` specs, as a runtime's `extra_target_keys` gives them (rule 4)."""
    return {name: Annotated[Any, Key(*spec)] for name, spec in keys.items()}


def fields_of(schema: type[Schema], *names: str) -> dict[str, Any]:
    """Some of `schema`'s fields, to declare the same keys in another schema."""
    return {name: Annotated[(schema.model_fields[name].annotation, *schema.model_fields[name].metadata)] for name in names}


def extend(schema: type[Schema], fields: Mapping[str, Any], name: str) -> type[Schema]:
    """`schema` with more keys (`fields`: key -> annotation), each optional; keys it already has are its own."""
    added = {key: (annotation, None) for key, annotation in fields.items() if key not in schema.model_fields}
    return create_model(name, __base__=schema, **added) if added else schema


def validate(schema: type[Schema], table: Mapping[str, Any], path: Any, where: str = "") -> Any:
    """The model, or one UsageError naming `path` and the first problem in `table`'s order (rule 3)."""
    try:
        return schema.model_validate(dict(table))
    except ValidationError as exc:
        raise _usage_error(schema, table, exc, path, where) from None


def check_value(path: Any, key: str, value: Any, schema: type[Schema], field: str) -> Any:
    """One value checked against `schema`'s `field`; the message names `key` (e.g. a command-line option)."""
    try:
        return _adapter(schema, field).validate_python(value)
    except ValidationError as exc:
        raise UsageError(f"{path}: {_message(exc.errors()[0], key)}") from None


@functools.lru_cache(maxsize=None)
def _adapter(schema: type[Schema], field: str) -> TypeAdapter:
    return TypeAdapter(fields_of(schema, field)[field], config=ConfigDict(strict=True))


def _usage_error(schema: type[Schema], table: Mapping[str, Any], exc: ValidationError, path: Any, where: str) -> UsageError:
    order = list(table)
    errors = sorted(exc.errors(), key=lambda e: order.index(e["loc"][0]) if e["loc"] and e["loc"][0] in order else len(order))
    error = errors[0]
    key = where + ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        name = str(error["loc"][-1])
        return UsageError(f"{path}: unknown key '{key}'{nearest(name, list(schema.model_fields))}")
    if error["type"] == "missing":
        return UsageError(f"{path}: missing required key '{key}'")
    return UsageError(f"{path}: {_message(error, key)}")


def _message(error: Mapping[str, Any], key: str) -> str:
    if error["type"] == "edgekit":
        return str(error["msg"]).replace(KEY, key)
    return f"'{key}': {error['msg'][:1].lower()}{error['msg'][1:]}, not {error.get('input')!r}"  # pydantic's own check
