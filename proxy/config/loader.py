"""Reading the YAML file into `Settings`, and describing every problem by its YAML path.

The YAML itself is read by `yaml_reader` (with its limits); errors from pydantic are
turned into lines an admin can act on. The policy file uses the same reader and error
descriptions.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from proxy.config.marks import data_path, format_path, located
from proxy.config.settings import Settings
from proxy.config.yaml_reader import read_yaml_document
from proxy.errors import ConfigError

CONFIG_ENV = "CONSENT_PROXY_CONFIG"
POLICY_KEYS = frozenset({"version", "defaults", "rules"})
POLICY_GIVEN_AS_CONFIG = (
    "this is a policy file, not the proxy's config: check it with "
    "`consent-proxy check --policy FILE` (or with the config that names it in `policy:`)"
)

M = TypeVar("M", bound=BaseModel)


def load_settings(path: Path | str | None = None, state_dir: Path | None = None) -> Settings:
    """Load and validate the config file; raise ConfigError listing every problem.
    `state_dir` (the `--state-dir` flag) wins over the file's and the environment's."""
    if path is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError([f"no config file given: pass --config or set {CONFIG_ENV}"])
    data, marks = read_yaml_document(path)
    try:
        base_dir = Path(path).resolve().parent
        return settings_from_data(data, str(path), base_dir=base_dir, state_dir=state_dir)
    except ConfigError as exc:
        raise located(exc, marks) from None


def settings_from_data(
    data: Any,
    source: str = "configuration",
    base_dir: Path | None = None,
    state_dir: Path | None = None,
) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of option: value"], source)
    if POLICY_KEYS & set(data) and not set(data) - POLICY_KEYS - {"policy"}:
        raise ConfigError([POLICY_GIVEN_AS_CONFIG], source)
    return validate_model(Settings, data, source, base_dir, {"state_dir": state_dir})


def validate_model(
    model: type[M],
    data: Any,
    source: str,
    base_dir: Path | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    try:
        return model.model_validate(data, context={**(context or {}), "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(describe_errors(model, exc.errors(), data), source) from None


_NO_DATA: Any = object()


def describe_errors(
    model: type[BaseModel], errors: list[ErrorDetails], data: Any = _NO_DATA
) -> list[str]:
    """One line per problem, `path: what to do`. Given the data the errors are about,
    the path is the one in the file (map keys included); else it is read off the model."""
    lines: list[str] = []
    for err in errors:
        where, why = _where(model, err, data), _explain(model, err)
        line = f"{where}: {why}"
        if where == "(top level)" and why.split(": ", 1)[0].replace(".", "").isidentifier():
            line = why  # a cross-field rule names its own path
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            tag = {**err, "loc": (*err["loc"], "type"), "type": "missing"}
            line = f"{_where(model, tag, data)}: {_explain(model, err)}"  # type: ignore[arg-type]
        if line not in lines:
            lines.append(line)
    return lines


def _where(model: type[BaseModel], err: ErrorDetails, data: Any) -> str:
    if data is _NO_DATA:
        return yaml_path(model, err["loc"])
    return format_path(data_path(data, err["loc"], missing=err["type"] == "missing"))


def yaml_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The path an admin sees in the file: pydantic's union tags left out."""
    out = ""
    current: Any = model
    for i, part in enumerate(loc):
        if isinstance(part, int):
            if not _is_sequence(current) and i == len(loc) - 1:
                out += f".{part}" if out else str(part)  # a YAML key that is a number
            else:
                out += f"[{part}]"
                current = _item_type(current)
            continue
        field_type = _field_type(current, part)
        if field_type is None:
            member = _tagged_member(current, part)
            if member is not current or i < len(loc) - 1 or not models_in(current):
                current = member  # a union tag or member name, not a key in the file
                continue
        out += f".{part}" if out else part
        current = field_type
    return out or "(top level)"


def _is_sequence(annotation: Any) -> bool:
    if get_origin(annotation) in (tuple, list):
        return True
    return any(_is_sequence(arg) for arg in get_args(annotation) if arg is not type(None))


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) + tuple(getattr(annotation, "__metadata__", ())):
        found.extend(models_in(arg))
    return found


def _field_type(annotation: Any, name: str) -> Any:
    for model in models_in(annotation):
        if name in model.model_fields:
            return model.model_fields[name].annotation
    return None


def _item_type(annotation: Any) -> Any:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not Ellipsis]
    return args[-1] if args else None


def _tagged_member(annotation: Any, tag: str) -> Any:
    for model in models_in(annotation):
        field = model.model_fields.get("type")
        if field is not None and tag in getattr(field.annotation, "__args__", ()):
            return model
    return annotation


def _explain(model: type[BaseModel], err: ErrorDetails) -> str:
    kind, given = err["type"], err.get("input")
    ctx = err.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{_did_you_mean(err['loc'][-1], allowed)}{hint}"
    if kind == "missing":
        return "is required"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return "is required: it says which kind of entry this is"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length')} item(s), got {given!r}"
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("ip_v4_network", "ip_v6_network", "ip_any_network"):
        return f"must be an IP address or CIDR network such as 10.0.0.0/8, got {given!r}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of option: value, got {type(given).__name__}"
    msg = str(err["msg"])
    return f"{msg[0].lower()}{msg[1:]}, got {given!r}"


def _did_you_mean(key: object, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            current = _item_type(current)
        else:
            current = _field_type(current, part) or _tagged_member(current, part)
    models = models_in(current)
    return list(models[0].model_fields) if len(models) == 1 else []
