"""The coverage problem on a worker: Sionna RT radio maps of APs (and a reflector).

``setup`` loads the scene once, adds the transmitters (and the reflector) and keeps one
radio-map solver; each evaluation moves them and computes one radio map. The objective is
taken on the *combined* map: each cell's best server (the largest RSS over the APs),
because a client associates with its strongest AP, not with all of them at once.

Gradients: a radio map's gradient with respect to a transmitter's position is exactly
zero (a ray's landing cell is a step function of it), so this problem reports none; GD
estimates them with central finite differences or SPSA over the map (``gradient: fd`` or
``spsa``), with steps of the order of a cell.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpcopt.problems.base import Evaluation, Problem
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.problems.coverage.reflector import WallFrame, plate_mesh

LLVM = "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1"


def import_sionna():
    """Import Mitsuba (CUDA variant when a GPU is there, else LLVM on the CPU) and Sionna RT."""
    if os.path.exists(LLVM):
        # LLVM 15, which some distributions also install, crashes Dr.Jit: prefer 19.
        os.environ.setdefault("DRJIT_LIBLLVM_PATH", LLVM)
    import mitsuba as mi

    if mi.variant() is None:
        variants = mi.variants()
        cuda = "cuda_ad_mono_polarized"
        mi.set_variant(cuda if cuda in variants and _has_cuda() else "llvm_ad_mono_polarized")
    import sionna.rt as rt

    return mi, rt


def _has_cuda() -> bool:
    try:
        import drjit as dr

        return dr.has_backend(dr.JitBackend.CUDA)
    except Exception:  # no driver, no device: the CPU variant is the answer either way
        return False


def scene_file(scene: str) -> str:
    """The scene to load: the shipped office, a Sionna built-in by name, or an XML path."""
    if scene == "office":
        from hpcopt.problems.coverage.office import scene_path

        return str(scene_path())
    _, rt = import_sionna()
    builtin = getattr(rt.scene, scene, None)
    if isinstance(builtin, str):
        return builtin
    if Path(scene).suffix == ".xml" and Path(scene).is_file():
        return scene
    raise FileNotFoundError(
        f"scene {scene!r} is neither 'office', a Sionna built-in scene, nor an .xml file"
    )


def wall_frame(config: CoverageConfig) -> WallFrame:
    """The reflector's wall: a named wall of the shipped office, or two corners."""
    wall = config.reflector.wall
    x0, y0, x1, y1 = config.area()
    centre = ((x0 + x1) / 2, (y0 + y1) / 2, config.radio.plane_height_m)
    if isinstance(wall, str):
        from hpcopt.problems.coverage.office import WALLS_FOR_REFLECTORS

        a, b = WALLS_FOR_REFLECTORS[wall][:2]
        return WallFrame.from_corners(a, b, towards=np.add(a, WALLS_FOR_REFLECTORS[wall][2]))
    return WallFrame.from_corners(*wall, towards=centre)


def to_dbm(watts: np.ndarray) -> np.ndarray:
    """Power in W to dBm; zero power is -inf."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(watts) + 30.0


def objective(combined_dbm: np.ndarray, mask: np.ndarray, config: CoverageConfig) -> float:
    """The configured objective over the masked cells of a combined map (dBm)."""
    obj = config.objective
    cells = combined_dbm[mask & (combined_dbm > obj.floor_dbm)]
    if not len(cells):
        return float("nan")
    if obj.kind == "p5":
        return float(np.percentile(cells, obj.percentile))
    if obj.kind == "softmin":
        t = obj.temperature_db
        low = cells.min()
        return float(low - t * np.log(np.mean(np.exp(-(cells - low) / t))))
    return float(np.mean(cells >= obj.threshold_dbm))


class CoverageProblem(Problem):
    """Radio-map coverage of one or two APs (and a reflector) on a floor."""

    config: CoverageConfig

    def setup(self) -> None:
        mi, rt = import_sionna()
        c, radio = self.config, self.config.radio
        self._mi = mi
        self.scene = rt.load_scene(scene_file(c.scene))
        self.scene.frequency = radio.frequency_hz
        self.scene.tx_array = rt.PlanarArray(
            num_rows=radio.array_rows, num_cols=radio.array_cols,
            pattern=radio.pattern, polarization=radio.polarization,
        )  # fmt: skip
        self.scene.rx_array = rt.PlanarArray(
            num_rows=1, num_cols=1, pattern="iso", polarization=radio.polarization
        )
        self.aps = []
        for i in range(1 if c.mode == "1ap" else 2):
            tx = rt.Transmitter(f"ap{i + 1}", position=[0.0, 0.0, c.ap_height_m])
            tx.power_dbm = radio.tx_power_dbm
            self.scene.add(tx)
            self.aps.append(tx)
        self.reflector = None
        if c.mode == "2ap_reflector":
            self.reflector = self._add_reflector(rt)
        x0, y0, x1, y1 = c.area()
        self._center = [(x0 + x1) / 2, (y0 + y1) / 2, radio.plane_height_m]
        self._size = [x1 - x0, y1 - y0]
        self.solver = rt.RadioMapSolver()

    def _add_reflector(self, rt):
        c = self.config.reflector
        self._wall = wall_frame(self.config)
        material = rt.ITURadioMaterial("reflector-material", c.material, thickness=0.01)
        plate = rt.SceneObject(
            fname=str(plate_mesh(c.width_m, c.height_m)), name="reflector",
            radio_material=material,
        )  # fmt: skip
        self.scene.edit(add=plate)
        return plate

    def _place(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Move the APs (and the reflector) to point ``x``; return their world placement."""
        c = self.config
        p = dict(zip(self.space.names, np.asarray(x, dtype=float)))
        placed = {}
        for i, tx in enumerate(self.aps, start=1):
            pos = np.array([p[f"ap{i}_x"], p[f"ap{i}_y"], c.ap_height_m])
            tx.position = self._point(pos)
            yaw = np.radians(p.get(f"ap{i}_yaw", 0.0))
            tx.orientation = self._point([yaw, 0.0, 0.0])
            placed[f"ap{i}_position"] = pos
        if self.reflector is not None:
            r = c.reflector
            centre = self._wall.place(p["refl_u"], p["refl_v"], r.width_m, r.height_m, r.offset_m)
            focus = np.array([p["focus_x"], p["focus_y"], c.radio.plane_height_m])
            self.reflector.position = self._point(centre)
            self.reflector.look_at(self._point(focus))
            facing = (focus - centre) / np.linalg.norm(focus - centre)
            placed["reflector_position"] = centre
            placed["reflector_normal"] = facing
        return placed

    def _point(self, v: np.ndarray | list[float]) -> Any:
        return self._mi.Point3f(*(float(c) for c in v))

    def radio_map(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-AP RSS maps in dBm, shape ``(n_aps, ny, nx)``, and the placement, at ``x``."""
        placed = self._place(x)
        r = self.config.radio
        rm = self.solver(
            self.scene, center=self._center, orientation=[0.0, 0.0, 0.0], size=self._size,
            cell_size=[r.cell_size_m, r.cell_size_m], samples_per_tx=r.samples_per_tx,
            max_depth=r.max_depth, specular_reflection=r.specular_reflection,
            diffuse_reflection=r.diffuse_reflection, refraction=r.refraction,
            diffraction=r.diffraction, seed=r.seed,
        )  # fmt: skip
        return to_dbm(np.asarray(rm.rss.numpy(), dtype=float)), placed

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        start = time.perf_counter()
        per_ap, placed = self.radio_map(x)
        elapsed = time.perf_counter() - start
        combined = per_ap.max(axis=0)
        mask = np.isfinite(combined)
        value = objective(combined, mask, self.config)
        cells = combined[mask & (combined > self.config.objective.floor_dbm)]
        extras = {
            "p5_rss_dbm": float(np.percentile(cells, 5)) if len(cells) else float("nan"),
            "coverage_fraction": float(np.mean(cells >= self.config.objective.threshold_dbm))
            if len(cells)
            else 0.0,
            "radio_map_time_s": elapsed,
            **placed,
        }
        if np.isnan(value):
            return Evaluation.failed("no cell of the region receives any power above floor_dbm")
        return Evaluation(value=value, extras=extras)
