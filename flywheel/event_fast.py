"""The stream job's hot-path event parser: ``parse_event_fast(raw)`` is ``parse_event(raw)``, faster.

``flywheel.events`` (the pydantic ``FeedbackEvent``) stays the one source of truth. This module
derives a msgspec mirror of it at import time: one ``msgspec.Struct`` per model, with the
pydantic fields' names, required/optional, string lengths, patterns, literals and bounds
(field names, limits and enums are read from the models, none is written here). msgspec then
decodes and checks the bytes in one compiled pass, and the rules it cannot express run in
plain Python after it, in code generated from the models: their own validator functions
(``AfterValidator``s in the annotations, ``@field_validator`` and
``@model_validator(mode="after")`` methods) are called as pydantic calls them, so a change to
a validator needs no change here. For the common case a few validators have a cheap
sufficient condition here (``_QUICK_CHECKS``: "printable ASCII has no control character"),
pinned to a hash of the validator's source: when the source changes the condition is dropped
and the validator is called every time, and ``STALE_QUICK_CHECKS``, which the tests check,
names it. A model the mirror cannot reproduce (a config option, validator mode or type it does
not know) leaves ``parse_event_fast`` being ``parse_event`` and ``UNAVAILABLE`` saying why
(with a warning, and a failing test).

What comes back: either the ``FeedbackEvent`` that ``parse_event`` returns for the same bytes
(built without validating again, equal to pydantic's including nested models, defaults and
``model_fields_set``), or whatever ``parse_event`` raises for them. The fast path only ever
*accepts*; every input it does not accept is handed to ``parse_event`` itself, so refusals
carry the same code and the same (field, message) pairs as before, and a DLQ record is
byte-for-byte what it was. The fall-back cases:

* anything msgspec refuses: not JSON, NaN/Infinity, numbers out of range, lone surrogates,
  invalid UTF-8, unknown or missing fields, wrong types, lengths, patterns, nesting, a
  top-level array: these are all invalid events, which ``parse_event`` reports;
* a validator that raises (control characters, no visible character, a bad timestamp or
  one in the future, exactly-one-of rules, task/input mismatches, PNG checks);
* a key given twice (msgspec keeps the last): found by counting keys in the bytes
  (``"`` + whitespace + ``:``) against the fields decoded; if a string value itself holds
  ``\\":`` the count is redone exactly with a tokenizer, and only a real duplicate falls back;
* input that is not ``bytes`` (a ``str``; the stream job always passes bytes) or is over
  ``MAX_EVENT_BYTES``.

On the stream benchmark's mix every valid event takes the fast path; the fall-backs are the
invalid ones (421 of 20,000, 2.1 %; each then costs the fast attempt plus ``parse_event``).

``copy_with(model, update)`` is ``model.model_copy(update=update)``, cheaper (for the stream
job's cleaning step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import textwrap
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo
from pydantic.types import AllowInfNan, Strict

from flywheel.events import MAX_EVENT_BYTES, SCHEMA_VERSION, FeedbackEvent, parse_event

try:  # a core dependency to declare (pyproject.toml); without it parse_event_fast is parse_event
    import msgspec
except ImportError:  # pragma: no cover - exercised only where msgspec is not installed
    msgspec = None  # type: ignore[assignment]

__all__ = ["copy_with", "parse_event_fast"]

_M = TypeVar("_M", bound=BaseModel)

# Model config keys the mirror reproduces (extra must be "forbid"); the rest only shape the JSON
# schema or the instance after validation. Any other key stops the mirror (see UNAVAILABLE).
_CONFIG_KEYS = {"extra", "frozen", "title", "json_schema_extra"}
# Constraints the mirror knows (annotated_types' and pydantic's metadata attributes).
_CONSTRAINTS = {"min_length", "max_length", "ge", "le", "gt", "lt", "pattern", "strict", "allow_inf_nan"}
_METADATA = (annotated_types.BaseMetadata, AllowInfNan, Strict)


@dataclass(frozen=True)
class _FieldInfoArg:
    """What pydantic hands a validator that takes ``info`` (only ``field_name`` is set)."""

    field_name: str
    data: dict[str, Any] | None = None
    mode: str = "python"
    context: Any = None
    config: Any = None


# A validator as pydantic calls it: func(value), or func(value, info) when info is given.
_Check = tuple[Callable[..., Any], "_FieldInfoArg | None"]


@dataclass(frozen=True)
class _Field:
    name: str
    required: bool
    default: Any  # when not required
    nested: _Mirror | None  # the field is a model
    before: tuple[_Check, ...]  # @field_validator(mode="before"), in call order
    inner_after: tuple[_Check, ...]  # AfterValidators of the type (not called on None)
    after: tuple[_Check, ...]  # @field_validator(mode="after"), in call order


@dataclass(frozen=True)
class _Mirror:
    model: type[BaseModel]
    struct: type[msgspec.Struct]
    fields: tuple[_Field, ...]
    model_after: tuple[Callable[[Any], Any], ...]
    build: Callable[[msgspec.Struct], tuple[Any, int]]  # see _compile


def _unsupported(model: type[BaseModel], what: str) -> TypeError:
    return TypeError(f"flywheel.event_fast cannot mirror {model.__name__}: {what}; update event_fast")


def _rust_pattern(pattern: str) -> str:
    """The pattern for Python's ``re.search`` that matches what pydantic's Rust regex matches:
    there ``$`` is the end of the text, in Python it also matches before a final newline."""
    if re.search(r"\\[A-Za-z]|\(\?|[*+?}]\?", pattern):
        raise ValueError(f"pattern {pattern!r} uses syntax whose Rust and Python meanings may differ")
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern


def _attributes(item: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(item):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    return dict(getattr(item, "__dict__", {}))


def _metadata(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out += _metadata(item.metadata) if isinstance(item, FieldInfo) else [item]
    return out


def _leaf_type(model: type[BaseModel], name: str, base: Any, meta: list[Any]) -> tuple[Any, list[Any]]:
    """(msgspec type, AfterValidator functions) of one non-null field type and its metadata."""
    constraints: dict[str, Any] = {}
    after: list[Any] = []
    for item in meta:
        if isinstance(item, AfterValidator):
            after.append((item.func, None))
            continue
        given = _attributes(item)
        if not isinstance(item, _METADATA) or not given or set(given) - _CONSTRAINTS:
            raise _unsupported(model, f"field {name!r} has the annotation {item!r}")
        constraints.update({k: v for k, v in given.items() if v is not None})
    # strict/allow_inf_nan need nothing: msgspec is at least as strict (no str->number, no
    # int->bool, no NaN or infinity from JSON); where it is stricter, parse_event decides.
    constraints.pop("strict", None)
    constraints.pop("allow_inf_nan", None)
    if "pattern" in constraints:
        constraints["pattern"] = _rust_pattern(constraints["pattern"])
    if base in (str, float, int, bool):
        if base is bool and constraints:
            raise _unsupported(model, f"field {name!r}: constraints on a bool")
        return (Annotated[base, msgspec.Meta(**constraints)] if constraints else base), after
    if typing.get_origin(base) is Literal and not constraints:
        return base, after
    raise _unsupported(model, f"field {name!r} has the type {base!r}")


def _validators(model: type[BaseModel]) -> tuple[dict[str, list], dict[str, list], list]:
    """(before, after) field validators by field name, in pydantic's call order, and the
    model's after-validators."""
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.root_validators:
        raise _unsupported(model, "pydantic v1-style validators")
    before: dict[str, list] = {}
    after: dict[str, list] = {}
    for dec in decorators.field_validators.values():
        if dec.info.mode not in ("before", "after"):
            raise _unsupported(model, f"a field validator of mode {dec.info.mode!r}")
        params = len(inspect.signature(dec.func).parameters)
        if params not in (1, 2):
            raise _unsupported(model, f"field validator {dec.cls_var_name} takes {params} arguments")
        names = model.model_fields if "*" in dec.info.fields else dec.info.fields
        for name in names:
            check = (dec.func, None if params == 1 else _FieldInfoArg(name))
            (before if dec.info.mode == "before" else after).setdefault(name, []).append(check)
    for funcs in before.values():  # a later-defined before validator wraps, so runs, first
        funcs.reverse()
    model_after = []
    for model_dec in decorators.model_validators.values():
        if model_dec.info.mode != "after":
            raise _unsupported(model, f"a model validator of mode {model_dec.info.mode!r}")
        model_after.append(model_dec.func)
    return before, after, model_after


def _mirror(model: type[BaseModel]) -> _Mirror:
    config = dict(model.model_config)
    if config.get("extra") != "forbid" or set(config) - _CONFIG_KEYS:
        raise _unsupported(model, f"model_config {config}")
    if model.__private_attributes__ or model.__pydantic_post_init__ or model.__pydantic_root_model__:
        raise _unsupported(model, "private attributes, model_post_init or a root model")
    before, after, model_after = _validators(model)
    fields: list[_Field] = []
    struct_fields: list[tuple[Any, ...]] = []
    for name, info in model.model_fields.items():
        if info.alias or info.validation_alias or info.default_factory is not None:
            raise _unsupported(model, f"field {name!r} has an alias or a default factory")
        annotation = info.annotation
        args = typing.get_args(annotation)
        optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1 or info.metadata:
                raise _unsupported(model, f"field {name!r} has the type {annotation!r}")
            annotation = rest[0]
        meta = list(info.metadata)
        if typing.get_origin(annotation) is Annotated:
            annotation, *extra = typing.get_args(annotation)
            meta += _metadata(extra)
        nested = None
        inner_after: list[Any] = []
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if meta:
                raise _unsupported(model, f"field {name!r} annotates a model")
            nested = _mirror(annotation)
            leaf: Any = nested.struct
        elif annotation is datetime and name in before and not meta:
            leaf = str  # the before validator parses the text (pydantic's own parser is not used)
        else:
            leaf, inner_after = _leaf_type(model, name, annotation, _metadata(meta))
        required = info.is_required()
        if required:
            struct_fields.append((name, leaf | None if optional else leaf))
        else:
            struct_fields.append(
                (name, (leaf | None if optional else leaf) | msgspec.UnsetType, msgspec.UNSET)
            )
        default = None if required else info.get_default(call_default_factory=False)
        fields.append(
            _Field(
                name,
                required,
                default,
                nested,
                tuple(before.get(name, ())),
                tuple(inner_after),
                tuple(after.get(name, ())),
            )
        )
    unknown = (set(before) | set(after)) - set(model.model_fields)
    if unknown:
        raise _unsupported(model, f"validators of unknown fields {sorted(unknown)}")
    struct = msgspec.defstruct(
        f"_{model.__name__}Wire", struct_fields, kw_only=True, forbid_unknown_fields=True
    )
    return _Mirror(model, struct, tuple(fields), tuple(model_after), _compile(model, fields, model_after))


# Cheap sufficient conditions for a validator to pass a value through unchanged, so that the
# generated code calls it only when the condition fails (the validator then decides, and
# raises or returns as before). Each was written against the validator's source, whose hash
# is kept here: if the source changes, the condition is dropped (the validator is called
# every time: correct, slower), the name is listed in STALE_QUICK_CHECKS and
# tests/unit/test_event_fast.py fails until the condition is re-checked and the hash updated.
# Keys: module.qualname; values: (source hash, condition on the value `v` of field `f`; "True":
# never call).
_QUICK_CHECKS: dict[str, tuple[str, Callable[[str, str], str]]] = {
    # no character of _CONTROL ([\x00-\x08\x0b-\x1f\x7f-\x9f]): printable ASCII holds none
    "flywheel.events._no_controls": ("9ab105778b7bd806", lambda v, f: f"{v}.isascii() and {v}.isprintable()"),
    # printable ASCII other than spaces is a letter, digit or punctuation: visible
    "flywheel.events._visible": (
        "d37f1a9952504959",
        lambda v, f: f"{v}.isascii() and {v}.isprintable() and not {v}.isspace()",
    ),
    # checks fields named *png_b64 only, and only when not None
    "flywheel.events._Part._png": (
        "cb8a22955c1ce097",
        lambda v, f: f"{v} is None" if f.endswith("png_b64") else "True",
    ),
    "flywheel.events.FeedbackEvent._integer_one": (
        "6a64c798c8b789a8",
        lambda v, f: f"type({v}) is int and {v} == {SCHEMA_VERSION!r}",
    ),
}
# The same for model validators: a condition on the fields (the variable of field `name` is
# n[name]) under which the validator returns the model unchanged.
_QUICK_MODEL_CHECKS: dict[str, tuple[str, Callable[[dict[str, str]], str]]] = {
    "flywheel.events.Input._exactly_one": (
        "708071427ab59487",
        lambda n: f"({n['text']} is None) != ({n['image_png_b64']} is None)",
    ),
    "flywheel.events.Prediction._shape": (
        "5df4af2e1143c1ef",
        lambda n: (
            f"({n['label']} is not None and {n['confidence']} is not None and {n['image_png_b64']} is None)"
            f" or ({n['label']} is None and {n['confidence']} is None and {n['image_png_b64']} is not None)"
        ),
    ),
    "flywheel.events.Feedback._exactly_one": (
        "baa76a9603b80e67",
        lambda n: (
            f"({n['label']} is not None) + ({n['target_png_b64']} is not None)"
            f" + ({n['accepted']} is not None) == 1"
        ),
    ),
    # a text event: text input, a label prediction (if any), a label or a supported accept
    "flywheel.events.FeedbackEvent._matches_task": (
        "dfc78a3ffa192f41",
        lambda n: (
            f"{n['task']} == 'text-classification' and {n['input']}.text is not None"
            f" and ({n['prediction']} is None or {n['prediction']}.label is not None)"
            f" and ({n['feedback']} is None or ({n['feedback']}.label is not None"
            f" if {n['feedback']}.accepted is None"
            f" else ({n['prediction']} is not None or {n['prediction_id']} is not None)))"
        ),
    ),
}
STALE_QUICK_CHECKS: list[str] = []  # quick checks dropped because their validator changed


def _source_hash(func: Callable[..., Any]) -> str | None:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(textwrap.dedent(source).encode()).hexdigest()[:16]


def _current(table: dict[str, tuple[str, Any]], func: Callable[..., Any]) -> Any:
    """``func``'s condition builder in ``table``, if it has one written against its source."""
    func = getattr(func, "__func__", func)
    name = f"{func.__module__}.{func.__qualname__}"
    if name not in table:
        return None
    expected, condition = table[name]
    if _source_hash(func) != expected:
        if name not in STALE_QUICK_CHECKS:
            STALE_QUICK_CHECKS.append(name)
        return None
    return condition


def _quick(func: Callable[..., Any], var: str, field: str) -> str | None:
    """The quick condition for field validator ``func`` on ``var`` (of field ``field``)."""
    condition = _current(_QUICK_CHECKS, func)
    return None if condition is None else condition(var, field)


def _compile(
    model: type[BaseModel], fields: list[_Field], model_after: list[Callable[[Any], Any]]
) -> Callable[[msgspec.Struct], tuple[Any, int]]:
    """``build(wire) -> (model instance, keys)``: the pydantic model of a decoded struct, its
    validators applied as pydantic applies them, and how many keys the JSON gave it and its
    nested models. Generated straight-line code (as ``dataclasses`` generates ``__init__``):
    a loop over the field plan cost 11 us per event, this about a third of it."""
    env: dict[str, Any] = {
        "_astuple": msgspec.structs.astuple,
        "_UNSET": msgspec.UNSET,
        "_set": object.__setattr__,
        "_set_fields_set": BaseModel.__dict__["__pydantic_fields_set__"].__set__,
        "_set_extra": BaseModel.__dict__["__pydantic_extra__"].__set__,
        "_set_private": BaseModel.__dict__["__pydantic_private__"].__set__,
        "_new": model.__new__,
        "_Model": model,
    }
    required = [f.name for f in fields if f.required]
    env["_REQUIRED"] = frozenset(required)
    names = [f"f{i}" for i in range(len(fields))]
    lines = ["def build(wire):", f"    ({', '.join(names)},) = _astuple(wire)"]
    lines += ["    given = set(_REQUIRED)", f"    keys = {len(required)}"]

    def calls(checks: tuple[_Check, ...], var: str, key: str, indent: str, field: str) -> list[str]:
        out = []
        for j, (func, info) in enumerate(checks):
            env[f"{key}_{j}"], env[f"{key}_{j}_info"] = func, info
            args = var if info is None else f"{var}, {key}_{j}_info"
            quick = _quick(func, var, field)
            if quick == "True":
                continue  # the validator returns this field's value unchanged, whatever it is
            if quick:
                out += [f"{indent}if not ({quick}):", f"{indent}    {var} = {key}_{j}({args})"]
            else:
                out.append(f"{indent}{var} = {key}_{j}({args})")
        return out

    for i, (field, var) in enumerate(zip(fields, names, strict=True)):
        indent = "    "
        if not field.required:
            env[f"_default{i}"] = field.default
            lines += [f"    if {var} is _UNSET:", f"        {var} = _default{i}", "    else:"]
            lines += ["        keys += 1", f"        given.add({field.name!r})"]
            indent = "        "
        lines += calls(field.before, var, f"_before{i}", indent, field.name)
        inner = []
        if field.nested is not None:
            env[f"_build{i}"] = field.nested.build
            inner += [f"{indent}    {var}, nested = _build{i}({var})", f"{indent}    keys += nested"]
        inner += calls(field.inner_after, var, f"_inner{i}", indent + "    ", field.name)
        if inner:
            lines += [f"{indent}if {var} is not None:", *inner]
        lines += calls(field.after, var, f"_after{i}", indent, field.name)
    values = ", ".join(f"{f.name!r}: {var}" for f, var in zip(fields, names, strict=True))
    lines += [
        "    model = _new(_Model)",  # what model_construct does, without its generality
        f"    _set(model, '__dict__', {{{values}}})",
        "    _set_fields_set(model, given)",
        "    _set_extra(model, None)",
        "    _set_private(model, None)",
    ]
    for j, check in enumerate(model_after):
        env[f"_model_after{j}"] = check
        condition = _current(_QUICK_MODEL_CHECKS, check)
        if condition is None:
            lines.append(f"    model = _model_after{j}(model)")
        else:
            variables = {f.name: var for f, var in zip(fields, names, strict=True)}
            lines += [f"    if not ({condition(variables)}):", f"        model = _model_after{j}(model)"]
    lines.append("    return model, keys")
    exec(compile("\n".join(lines), f"<event_fast: build {model.__name__}>", "exec"), env)
    return env["build"]


# The mirror of the contract, built once. Should the model change in a way the mirror cannot
# follow, parse_event_fast is parse_event (correct, not faster), UNAVAILABLE says why, and
# tests/unit/test_event_fast.py fails until event_fast is brought up to date.
UNAVAILABLE: str | None = None
try:
    if msgspec is None:
        raise TypeError("flywheel.event_fast needs msgspec, which is not installed")
    _EVENT = _mirror(FeedbackEvent)
    _BUILD, _DECODER = _EVENT.build, msgspec.json.Decoder(_EVENT.struct)
except Exception as exc:  # noqa: BLE001 - pydantic internals changed: correct and slower beats no stream job
    UNAVAILABLE = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"{UNAVAILABLE}: parse_event_fast falls back to parse_event", stacklevel=1)
# Exact count: strings are skipped whole (escapes included); those followed by a colon are keys.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"[ \t\n\r]*(:)?', re.DOTALL)


def _fast(raw: bytes) -> FeedbackEvent | None:
    """The event, or None when ``parse_event`` must decide (see the module docstring)."""
    if len(raw) > MAX_EVENT_BYTES:
        return None
    if not raw.isascii():
        raw.decode("utf-8")  # UnicodeDecodeError: not UTF-8 (msgspec checks too; this is cheap)
    event, keys = _BUILD(_DECODER.decode(raw))
    # Every key is followed by its colon after optional whitespace: with whitespace deleted,
    # '":' occurs once per key (and maybe in a string value), so this count bounds the keys.
    if raw.translate(None, b" \t\n\r").count(b'":') != keys:
        exact = sum(1 for m in _STRING.finditer(raw) if m.group(1))
        if exact != keys:
            return None  # a key given twice
    return event


def parse_event_fast(raw: bytes | str) -> FeedbackEvent:
    """``flywheel.events.parse_event(raw)``: the same event or the same InvalidEventError
    (for anything the fast path does not accept, it is ``parse_event`` that answers)."""
    if type(raw) is bytes and UNAVAILABLE is None:
        try:
            event = _fast(raw)
        except Exception:  # noqa: BLE001 - any refusal is parse_event's to report, with its code
            event = None
        if event is not None:
            return event
    return parse_event(raw)


_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def copy_with(model: _M, update: dict[str, Any]) -> _M:
    """``model.model_copy(update=update)`` (a shallow copy, not validated), without pydantic's
    generic copy machinery (0.9 us instead of 1.5). Models with extra fields or private
    attributes take ``model_copy`` itself."""
    if model.__pydantic_extra__ is not None or model.__pydantic_private__ is not None:
        return model.model_copy(update=update)
    cls = type(model)
    copied = cls.__new__(cls)
    object.__setattr__(copied, "__dict__", {**model.__dict__, **update})
    _set_fields_set(copied, model.__pydantic_fields_set__ | update.keys())
    _set_extra(copied, None)
    _set_private(copied, None)
    return copied
