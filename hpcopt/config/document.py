"""Reading a campaign config file: YAML or JSON, UTF-8, every key given once.

PyYAML and ``json`` both keep the last of a key given twice, silently: a second
``trials:`` would drop the first list unseen. Here it is an error naming both places.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A campaign config is invalid. ``problems`` lists ``"key.path: what is wrong"`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid campaign config {source}:\n{lines}")


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON campaign file into a dict (``ConfigError`` if unreadable, not
    UTF-8, not YAML or JSON, or giving a key twice in one mapping)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            str(path),
            [
                f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line "
                f"{line}) is not valid UTF-8; save the file as UTF-8"
            ],
        ) from None
    try:
        doc = _load_json(text) if path.suffix == ".json" else yaml.load(text, Loader=_YAMLLoader)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(str(path), [f"not valid {kind}: {exc}"]) from None
    except _RepeatedKeys as exc:
        raise ConfigError(str(path), exc.problems) from None
    if not isinstance(doc, dict):
        raise ConfigError(str(path), ["the top level must be a mapping (name:, trials:, ...)"])
    return doc


class _RepeatedKeys(Exception):
    """Keys given more than once in one mapping: ``problems`` has one line per key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives a key twice: PyYAML would keep
    the last silently, so a second ``trials:`` would drop the first list unseen."""

    def construct_document(self, node: yaml.Node) -> Any:
        problems = [
            f"{where}: given {len(marks)} times in one mapping, at {_positions(marks)}; "
            "give each key once"
            for where, marks in _yaml_repeats(node, "", set())
        ]
        if problems:
            raise _RepeatedKeys(problems)
        return super().construct_document(node)


def _yaml_repeats(
    node: yaml.Node, path: str, seen: set[int]
) -> Iterator[tuple[str, list[yaml.Mark]]]:
    """``(key path, where each is)`` of every scalar key given more than once in one
    mapping of the node tree under ``node``, outer mappings first (an alias is walked once)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _yaml_repeats(item, f"{path}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        marks: dict[tuple[str, str], list[yaml.Mark]] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                marks.setdefault((key.tag, key.value), []).append(key.start_mark)
        for (_, name), at in marks.items():
            if len(at) > 1:
                yield (f"{path}.{name}" if path else name), at
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from _yaml_repeats(value, f"{path}.{name}" if path else name, seen)


def _positions(marks: list[yaml.Mark]) -> str:
    """``lines 2 and 7``, or ``5:3 and 5:20 (line:column)`` when lines repeat."""
    lines = [m.line + 1 for m in marks]
    if len(set(lines)) == len(lines):
        return f"lines {', '.join(map(str, lines[:-1]))} and {lines[-1]}"
    spots = [f"{m.line + 1}:{m.column + 1}" for m in marks]
    return f"{', '.join(spots[:-1])} and {spots[-1]} (line:column)"


def _load_json(text: str) -> Any:
    """``json.loads``, refusing an object that gives a key twice (JSON keeps the last)."""
    problems: list[str] = []
    doc = _json_dicts(json.loads(text, object_pairs_hook=_Pairs), "", problems)
    if problems:
        raise _RepeatedKeys(problems)
    return doc


class _Pairs(list):
    """A JSON object as its ``(key, value)`` pairs, in order, repeats kept."""


def _json_dicts(value: Any, path: str, problems: list[str]) -> Any:
    """``value`` with every :class:`_Pairs` made a dict; a key path per repeated key goes
    to ``problems``."""
    if isinstance(value, list) and not isinstance(value, _Pairs):
        return [_json_dicts(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, _Pairs):
        return value
    keys = [k for k, _ in value]
    for key in dict.fromkeys(k for k in keys if keys.count(k) > 1):
        where = f"{path}.{key}" if path else key
        problems.append(f"{where}: given {keys.count(key)} times in one object; give each key once")
    return {
        key: _json_dicts(item, f"{path}.{key}" if path else key, problems) for key, item in value
    }
