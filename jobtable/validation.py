"""Checking job data: reading it from JSON text, and against a job module's ``Data``.

``Data`` may be a ``TypedDict``, a dataclass or a pydantic model. The check is
structural: required keys present, no unknown keys, and values of the declared
plain types (str, int, float, bool, list, dict, Literal, Optional, unions).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import (
    IO,
    Any,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from jobtable.errors import InvalidDataError
from jobtable.model import nesting_problem, too_deep


def parse_json_data(text: str, what: str = "data") -> dict[str, Any]:
    """Job data from JSON text: a JSON object nested at most ``MAX_JSON_DEPTH`` levels
    deep. Raises ``InvalidDataError`` naming ``what`` and the problem."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidDataError(f"{what} {too_deep()}") from None
    except json.JSONDecodeError as exc:
        raise InvalidDataError(f"{what} is not valid JSON: {exc}; give a JSON object such "
                               'as \'{"to": "a@b.c"}\'') from None
    deep = nesting_problem(value)
    if deep:
        raise InvalidDataError(f"{what} {deep}")
    if not isinstance(value, dict):
        raise InvalidDataError(
            f"{what} must be a dict (a JSON object), got {type(value).__name__}")
    return value


def read_job_data(data: str | None, data_file: str | Path | None,
                  stdin: IO[str] | None = None) -> dict[str, Any]:
    """Job data from the command line: ``--data JSON`` (``-`` reads standard input) or
    ``--data-file PATH`` (``-`` too), at most one of them; ``{}`` when neither is given.
    Raises ``InvalidDataError`` naming the option and the problem."""
    if data is not None and data_file is not None:
        raise InvalidDataError("give the job data once: --data or --data-file, not both")
    if data_file is not None:
        what = f"--data-file {str(data_file)!r}"
        if str(data_file) == "-":
            return parse_json_data(_read_stdin(stdin, "--data-file -"), "--data-file -")
        try:
            text = Path(data_file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InvalidDataError(f"{what} is not UTF-8 text; save the JSON as UTF-8") \
                from None
        except OSError as exc:
            raise InvalidDataError(
                f"cannot read {what}: {exc.strerror or exc}; give the path of a file "
                "holding a JSON object") from None
        return parse_json_data(text, what)
    if data == "-":
        return parse_json_data(_read_stdin(stdin, "--data -"), "--data -")
    return parse_json_data("{}" if data is None else data, "--data")


def _read_stdin(stdin: IO[str] | None, what: str) -> str:
    stream = sys.stdin if stdin is None else stdin
    try:
        return stream.read()
    except UnicodeDecodeError:
        raise InvalidDataError(f"{what}: standard input is not UTF-8 text") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, path: str) -> str | None:
    if tp is Any or tp is object:
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            if _check_value(value, option, path) is None:
                return None
        return f"{path} should be {_type_name(tp)}, got {type(value).__name__}"
    if origin is Literal:
        if value in get_args(tp):
            return None
        return f"{path} should be one of {list(get_args(tp))}, got {value!r}"
    if origin in (typing.Required, typing.NotRequired):
        return _check_value(value, get_args(tp)[0], path)
    if tp is type(None):
        return None if value is None else f"{path} should be None"
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if not isinstance(value, list):
            return f"{path} should be a list, got {type(value).__name__}"
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            # A fixed-length tuple: one type per position.
            if len(value) != len(args):
                return f"{path} should have {len(args)} items, got {len(value)}"
            items = list(zip(value, args, strict=True))
        else:
            items = [(item, args[0]) for item in value] if args else []
        for i, (item, item_type) in enumerate(items):
            problem = _check_value(item, item_type, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return f"{path} should be an object, got {type(value).__name__}"
        args = get_args(tp)
        if len(args) == 2:
            for key, item in value.items():
                problem = _check_value(item, args[1], f"{path}[{key!r}]")
                if problem:
                    return problem
        return None
    if is_typeddict(tp) or dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return f"{path} should be an object, got {type(value).__name__}"
        return validate_data(tp, value, prefix=f"{path}.")
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"{path} should be a number, got {type(value).__name__}"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{path} should be an integer, got {type(value).__name__}"
    if isinstance(tp, type):
        if isinstance(value, tp):
            return None
        return f"{path} should be {tp.__name__}, got {type(value).__name__}"
    return None


def validate_data(data_type: Any, data: dict[str, Any], prefix: str = "") -> str | None:
    """Return a description of the first problem, or None when ``data`` fits."""
    validator = getattr(data_type, "model_validate", None)
    if callable(validator):  # pydantic v2 model
        try:
            validator(data)
        except Exception as exc:
            return str(exc).replace("\n", " ")
        return None
    if is_typeddict(data_type):
        hints = get_type_hints(data_type)
        required = required_keys(data_type)
    elif dataclasses.is_dataclass(data_type):
        hints = get_type_hints(data_type)
        required = {f.name for f in dataclasses.fields(data_type)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
    else:
        return None
    missing = sorted(required - data.keys())
    if missing:
        return f"missing key {prefix + missing[0]!r} (required: {sorted(required)})"
    unknown = sorted(data.keys() - hints.keys())
    if unknown:
        return f"unexpected key {prefix + unknown[0]!r} (allowed: {sorted(hints)})"
    for key, value in data.items():
        problem = _check_value(value, hints[key], f"{prefix}{key}")
        if problem:
            return problem
    return None


def required_keys(typed_dict: Any) -> set[str]:
    """The required keys of a TypedDict, honouring ``Required``/``NotRequired``.

    Python 3.11 ignores those markers in ``__required_keys__`` when the module uses
    ``from __future__ import annotations``; the evaluated hints still carry them.
    """
    required = set(getattr(typed_dict, "__required_keys__", ()))
    for key, hint in get_type_hints(typed_dict, include_extras=True).items():
        origin = get_origin(hint)
        if origin is typing.NotRequired:
            required.discard(key)
        elif origin is typing.Required:
            required.add(key)
    return required
