"""Campaign configs: schema, validation with clear errors, and sweep expansion.

A campaign config (YAML or JSON) names the campaign, where it writes, the engine, and its
trials. ``shared`` is deep-merged under every trial; ``trials`` lists trials explicitly;
each of ``sweep_groups`` expands a ``grid`` of dotted keys and a list of ``seeds`` by
Cartesian product into named trials (the file is read by :mod:`hpcopt.config.document`).
Everything is validated before anything is written: errors name the key path and what is
allowed.

The ``method``, ``problem`` and ``engine`` sections accept what the registry
(:mod:`hpcopt.config.registry`) lists.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import reprlib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpcopt.config.cluster import SlurmConfig
from hpcopt.config.document import ConfigError, load_document
from hpcopt.config.registry import ENGINES, METHODS, PROBLEMS, build_method, section
from hpcopt.engine.local import LocalEngineConfig

TRIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")

ProblemSection = section(PROBLEMS, "name")
MethodSection = section(METHODS, "name")
EngineSection = section(ENGINES, "kind")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TrialConfig(_Strict):
    """One trial: a method searching one problem from one seed."""

    name: str = Field(pattern=TRIAL_NAME.pattern)
    seed: int = Field(0, ge=0)
    problem: ProblemSection
    method: MethodSection
    max_evaluations: int | None = Field(None, gt=0)


class SweepGroup(_Strict):
    """Trials made by a Cartesian product of ``grid`` values (dotted keys) and ``seeds``."""

    name: str = Field(pattern=TRIAL_NAME.pattern)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0])


class _Document(_Strict):
    """The top level as written, before trials are merged and expanded."""

    name: str = Field(pattern=TRIAL_NAME.pattern)
    output_dir: str | None = None
    engine: EngineSection = LocalEngineConfig()
    max_concurrent_trials: int | None = Field(None, ge=1)
    slurm: SlurmConfig = SlurmConfig()
    shared: dict[str, Any] = Field(default_factory=dict)
    trials: list[dict[str, Any]] = Field(default_factory=list)
    sweep_groups: list[SweepGroup] = Field(default_factory=list)


class Campaign(_Strict):
    """A validated campaign: its trials fully expanded, in run order."""

    name: str
    output_dir: str
    engine: EngineSection
    max_concurrent_trials: int | None = None  # None: as many as keep the engine busy
    slurm: SlurmConfig
    trials: tuple[TrialConfig, ...]
    document: dict[str, Any]

    def trial(self, name: str) -> TrialConfig:
        """The trial called ``name`` (``KeyError`` listing the names if there is none)."""
        for t in self.trials:
            if t.name == name:
                return t
        raise KeyError(f"no trial {name!r}; the campaign has {[t.name for t in self.trials]}")


def load(path: str | Path, output_dir: str | None = None) -> Campaign:
    """Load and validate a campaign file; ``output_dir`` overrides the file's."""
    return parse(load_document(path), source=str(path), output_dir=output_dir)


def parse(
    doc: Mapping[str, Any],
    source: str = "<config>",
    output_dir: str | None = None,
    check_files: bool = True,
) -> Campaign:
    """Validate a campaign document and expand its trials (``ConfigError`` on any problem).

    ``check_files=False`` skips checks of the files a config names (data files), for a
    campaign reopened from its store, whose trials carry the paths checked at creation.
    """
    _follow_registry()
    not_json = list(_not_json(doc, ""))
    if not_json:
        raise ConfigError(source, not_json)
    try:
        top = _Document.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(source, _messages(exc, _Document, prefix="")) from None
    expanded, problems = _expand(top)
    trials: list[TrialConfig] = []
    for where, raw in expanded:
        try:
            trial = TrialConfig.model_validate(raw, context={"check_files": check_files})
        except ValidationError as exc:
            problems.extend(_messages(exc, TrialConfig, prefix=where))
            continue
        problems.extend(_check_trial(trial, where))
        trials.append(trial)
    names = [t.name for t in trials]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"trial names must be unique; repeated: {dupes}")
    if not problems and not trials:
        problems.append("the campaign has no trials: add 'trials' or 'sweep_groups'")
    if problems:
        raise ConfigError(source, problems)
    return Campaign(
        name=top.name,
        output_dir=output_dir or top.output_dir or f"runs/{top.name}",
        engine=top.engine,
        max_concurrent_trials=top.max_concurrent_trials,
        slurm=top.slurm,
        trials=tuple(trials),
        document=json.loads(json.dumps(dict(doc))),
    )


def _follow_registry() -> None:
    """Rebuild the schema's method, problem and engine sections if the registry changed
    since they were built (a plugin registered at run time)."""
    sections = [
        (TrialConfig, "problem", section(PROBLEMS, "name")),
        (TrialConfig, "method", section(METHODS, "name")),
        (_Document, "engine", section(ENGINES, "kind")),
        (Campaign, "engine", section(ENGINES, "kind")),
    ]
    changed = False
    for model, key, annotated in sections:
        field = model.model_fields[key]
        union = get_args(annotated)[0]  # the discriminator stays on the field
        if field.annotation != union:
            field.annotation, changed = union, True
    if changed:
        for model in (TrialConfig, _Document, Campaign):  # Campaign holds TrialConfigs
            model.model_rebuild(force=True)


def _not_json(value: Any, path: str) -> Iterator[str]:
    """A line per value that JSON cannot hold (a campaign stores its config as JSON): YAML
    dates and binary, sets."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _not_json(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _not_json(item, f"{path}[{i}]")
    elif value is not None and not isinstance(value, str | int | float):
        yield (
            f"{path or '(top level)'}: {value!r} is a {type(value).__name__}, which a config "
            "cannot hold (it is stored as JSON): give text, a number, true/false, null, a list "
            "or a mapping (quote a date to keep it as text)"
        )


def _expand(top: _Document) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Every trial as ``(key path for errors, merged raw trial)``, in run order; and what
    keeps sweep groups from expanding (an empty list, a grid key through a value)."""
    expanded = [(f"trials[{i}]", deep_merge(top.shared, t)) for i, t in enumerate(top.trials)]
    problems = []
    for i, group in enumerate(top.sweep_groups):
        where = f"sweep_groups[{i}]"
        empty = [f"{where}.grid.{key}" for key, values in group.grid.items() if not values]
        empty += [f"{where}.seeds"] if not group.seeds else []
        problems += [f"{e}: an empty list makes no trials; give at least one value" for e in empty]
        try:
            expanded += _expand_group(top.shared, group, where)
        except ValueError as exc:
            problems.append(str(exc))
    return expanded, problems


def _expand_group(
    shared: dict[str, Any], group: SweepGroup, where: str
) -> list[tuple[str, dict[str, Any]]]:
    """The trials of one sweep group, grid values outermost, seeds innermost."""
    out = []
    keys = list(group.grid)
    for values in itertools.product(*(group.grid[k] for k in keys)):
        for seed in group.seeds:
            raw = deep_merge(shared, group.base)
            for key, value in zip(keys, values):
                _set_dotted(raw, key, value, f"{where}.grid.{key}")
            raw["seed"] = seed
            label = "-".join(f"{k.rsplit('.', 1)[-1]}={_label(v)}" for k, v in zip(keys, values))
            raw["name"] = "-".join(p for p in (group.name, label, f"seed={seed}") if p)
            out.append((f"{where} (trial {raw['name']!r})", raw))
    return out


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; nested mappings merge, everything else replaces.

    A section that names a different ``name`` or ``kind`` (another method, problem or
    constraint) replaces the base section instead of merging into it.
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if (
            isinstance(value, Mapping)
            and isinstance(out.get(key), Mapping)
            and not _other_kind(out[key], value)
        ):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _other_kind(base: Mapping[str, Any], override: Mapping[str, Any]) -> bool:
    return any(k in base and k in override and base[k] != override[k] for k in ("name", "kind"))


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """``raw[a][b][c] = value`` for ``dotted`` ``a.b.c``, making mappings that are missing;
    ``ValueError`` starting with ``where`` when a part on the way holds a value."""
    *parents, leaf = dotted.split(".")
    node = raw
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(
                f"{where}: {'.'.join(parents[: depth + 1])} is a value "
                f"({reprlib.repr(node)}), not a mapping; a dotted grid key can only "
                "name keys inside mappings"
            )
    node[leaf] = copy.deepcopy(value)


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9_.+-]", "", text) or "x"


def _check_trial(trial: TrialConfig, where: str) -> list[str]:
    """Checks that need the problem's space: parameter names in the method config."""
    reason = trial.problem.gradient_error()
    if reason and getattr(trial.method, "gradient", None) == "problem":
        return [f"{where}: method.gradient: 'problem' needs exact gradients, but {reason}"]
    try:
        space = trial.problem.space()
        build_method(
            trial.method,
            space,
            trial.seed,
            feasible=lambda u: trial.problem.feasible(space.decode(u)),
            has_gradient=trial.problem.gradient_mask(),
        )
    except (ValueError, ImportError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        return [f"{where}: {msg}"]
    return []


def _messages(exc: ValidationError, model: type[BaseModel], prefix: str) -> list[str]:
    """One ``key.path: message`` line per problem; the alternatives of a union at one key
    are folded into a single line."""
    by_path: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for err in exc.errors():
        path, allowed = _walk(model, err["loc"])
        where = ".".join(p for p in (prefix, path) if p).replace(".[", "[") or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                got[where] = f" (got {err['input']!r})"
        if msg not in by_path.setdefault(where, []):
            by_path[where].append(msg)
    out = []
    for where, msgs in by_path.items():
        rest = [m.removeprefix("Input should be ") for m in msgs[1:]]
        out.append(f"{where}: {', or '.join([msgs[0], *rest])}{got.get(where, '')}")
    return out


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, list[str]]:
    """Render a pydantic ``loc`` as a key path, dropping union tags; and the allowed keys at
    the last mapping reached (for 'unknown key' messages)."""
    parts: list[str] = []
    current: Any = model
    allowed: list[str] = sorted(model.model_fields)
    for item in loc:
        current = _strip(current)
        if isinstance(item, int):
            parts.append(f"[{item}]")
            args = get_args(current)
            current = args[0] if args else Any
            continue
        union = _union_members(current)
        if union and item in union:  # a discriminator tag: pick the member, print nothing
            current = union[item]
            allowed = sorted(current.model_fields)
            continue
        if get_origin(current) in (Union, types.UnionType):  # a plain union's member label
            current = Any
            continue
        parts.append(str(item))
        if isinstance(current, type) and issubclass(current, BaseModel):
            allowed = sorted(current.model_fields)
            field = current.model_fields.get(str(item))
            current = field.annotation if field else Any
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            current = Any
    return ".".join(parts), allowed


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return tp


def _union_members(tp: Any) -> dict[str, type[BaseModel]]:
    """``{tag: model}`` of a union discriminated by a ``name`` or ``kind`` Literal."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    members = {}
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            field = arg.model_fields.get("name") or arg.model_fields.get("kind")
            for value in get_args(field.annotation) if field else ():
                members[value] = arg
    return members
