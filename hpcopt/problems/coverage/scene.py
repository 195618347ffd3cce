"""Finding and checking a coverage scene without loading Sionna (the driver does this).

A scene is ``office`` (shipped), the name of one of Sionna RT's built-in scenes, or the
path of a Mitsuba XML file. :func:`scene_bounds` reads the extent of its PLY meshes so
that a config can be checked against the scene (region, AP height) before a campaign
folder exists.
"""

from __future__ import annotations

import functools
import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from hpcopt.problems.coverage.office import scene_path


class SceneError(ValueError):
    """A scene that cannot be used: missing, unreadable, or not what the config says."""


def builtin_scenes() -> dict[str, Path]:
    """Sionna RT's built-in XML scenes by name (empty when Sionna RT is not installed)."""
    spec = importlib.util.find_spec("sionna")
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(next(iter(spec.submodule_search_locations))) / "rt" / "scenes"
    return {p.parent.name: p for p in sorted(root.glob("*/*.xml")) if p.stem == p.parent.name}


def resolve_scene(scene: str) -> Path:
    """The XML file of ``scene``; :class:`SceneError` naming what was looked for."""
    if scene == "office":
        return scene_path()
    builtin = builtin_scenes()
    if scene in builtin:
        return builtin[scene]
    path = Path(scene).expanduser()
    if path.suffix != ".xml":
        raise SceneError(
            f"scene {scene!r} is neither 'office', a Sionna RT built-in scene "
            f"({', '.join(sorted(builtin)) or 'none installed'}) nor an .xml file"
        )
    if not path.is_file():
        raise SceneError(f"scene {scene!r}: no such file")
    return path.resolve()


def scene_bounds(xml: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Lower and upper corners ``(3,)`` of all PLY meshes of a scene file (metres), or None
    when a shape is not a plain PLY mesh (then the scene's extent is not checked here).
    Read once per file version (every expanded trial validates its scene)."""
    xml = Path(xml)
    return _bounds(xml, xml.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _bounds(xml: Path, mtime_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        raise SceneError(f"scene file {xml}: cannot be read as XML ({exc})") from None
    lows, highs = [], []
    for shape in root.iter("shape"):
        if shape.get("type") != "ply" or shape.find("transform") is not None:
            return None
        name = shape.find("string[@name='filename']")
        if name is None:
            return None
        mesh = xml.parent / str(name.get("value"))
        if not mesh.is_file():
            raise SceneError(f"scene file {xml}: its mesh {mesh} does not exist")
        v = ply_vertices(mesh)
        lows.append(v.min(axis=0))
        highs.append(v.max(axis=0))
    if not lows:
        raise SceneError(f"scene file {xml}: it has no mesh")
    return np.min(lows, axis=0), np.max(highs, axis=0)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def ply_vertices(path: Path) -> np.ndarray:
    """Vertex positions ``(n, 3)`` of a PLY file (ASCII or binary, vertex element first)."""
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise SceneError(f"mesh {path}: not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[data.index(b"\n", end) + 1 :]
    fmt, count, props, element = "", 0, [], ""
    for line in header:
        words = line.split()
        if words[:1] == ["format"]:
            fmt = words[1]
        elif words[:1] == ["element"]:
            if element == "vertex":
                break
            element = words[1]
            count = int(words[2]) if element == "vertex" else count
        elif words[:1] == ["property"] and element == "vertex":
            if words[1] == "list" or words[1] not in _PLY_TYPES:
                raise SceneError(f"mesh {path}: unsupported vertex property {line!r}")
            props.append((words[2], _PLY_TYPES[words[1]]))
    names = [n for n, _ in props]
    if not {"x", "y", "z"} <= set(names) or not count:
        raise SceneError(f"mesh {path}: no vertex positions")
    if fmt == "ascii":
        rows = [r.split()[: len(props)] for r in body.decode("ascii").split("\n")[:count]]
        if len(rows) < count or any(len(r) < len(props) for r in rows):
            raise SceneError(f"mesh {path}: truncated or ragged vertex rows")
        try:
            table = np.array(rows, dtype=float)
        except ValueError:
            raise SceneError(f"mesh {path}: a vertex row is not numbers") from None
        return table[:, [names.index(c) for c in "xyz"]]
    order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
    if order is None:
        raise SceneError(f"mesh {path}: unknown PLY format {fmt!r}")
    dtype = np.dtype([(n, order + t) for n, t in props])
    if len(body) < count * dtype.itemsize:
        raise SceneError(f"mesh {path}: truncated")
    table = np.frombuffer(body, dtype=dtype, count=count)
    return np.stack([table[c].astype(float) for c in "xyz"], axis=-1)
