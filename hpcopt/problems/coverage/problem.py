"""The coverage problem on a worker: Sionna RT radio maps of APs (and a reflector).

``setup`` loads the scene once, decides which cells are floor, adds the transmitters (and
the reflector) and keeps one radio-map solver; each evaluation moves them and computes one
radio map. The objective is taken on the *combined* map: each cell's best server (the
largest RSS over the APs), because a client associates with its strongest AP, over every
floor cell (an unlit one counts as dark, see :mod:`hpcopt.problems.coverage.objective`).

Gradients: an AP's yaw and tilt change the map smoothly through its antenna pattern, and
Dr.Jit differentiates that exactly (one backward pass, about the cost of a map). A map's
derivative by a transmitter's *position* is zero with diffraction off (a ray's landing
cell is a step function of it) and far too small with it on; reflector moves give none
either. Those the method estimates (central differences or SPSA over the map, with the
map's fixed seed as common random numbers), so GD runs on mixed gradients.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from hpcopt.core.evaluation import Evaluation
from hpcopt.problems.base import Problem
from hpcopt.problems.coverage import device
from hpcopt.problems.coverage import objective as ob
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.problems.coverage.device import Device
from hpcopt.problems.coverage.floor import cell_centres, inside_boxes, inside_solids
from hpcopt.problems.coverage.objective import to_dbm
from hpcopt.problems.coverage.office import boxes
from hpcopt.problems.coverage.reflector import plate_mesh
from hpcopt.problems.coverage.scene import SceneError, resolve_scene

LLVM = "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1"

_log = logging.getLogger(__name__)


def import_sionna() -> tuple[Any, Any]:
    """Import Mitsuba, on the variant :mod:`~hpcopt.problems.coverage.device` chooses
    (once per process; :func:`sionna_device` says which and why), and Sionna RT."""
    if os.path.exists(LLVM):
        # LLVM 15, which some distributions also install, crashes Dr.Jit: prefer 19.
        os.environ.setdefault("DRJIT_LIBLLVM_PATH", LLVM)
    import mitsuba as mi

    if not _DEVICE:
        if mi.variant() is None:
            choice = device.choose(device.wanted(), mi.variants(), _cuda_started)
            mi.set_variant(choice.variant)
        else:
            choice = Device(mi.variant(), "set before hpcopt imported Sionna RT")
        _log.info("Sionna RT runs on %s: %s", choice.variant, choice.why)
        _DEVICE.append(choice)
    import sionna.rt as rt

    return mi, rt


def sionna_device() -> Device:
    """The variant this process runs Sionna RT on, and why (after :func:`import_sionna`)."""
    return _DEVICE[0]


def _cuda_started() -> bool:
    dr = _drjit()
    return bool(dr.has_backend(dr.JitBackend.CUDA))


class CoverageProblem(Problem):
    """Radio-map coverage of one or two APs (and a reflector) over a floor."""

    config: CoverageConfig

    def setup(self) -> None:
        mi, rt = import_sionna()
        self.device = sionna_device()
        c, radio = self.config, self.config.radio
        self._mi = mi
        try:
            self.scene = rt.load_scene(str(resolve_scene(c.scene)))
        except SceneError as exc:
            raise ValueError(f"scene: {exc}") from None
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
        self._llvm = not self.device.gpu
        if not _THREADS:
            _THREADS.append(_drjit().thread_count())
        self.floor = self._floor_cells()
        self._gradient_mask = c.gradient_mask()

    def _floor_cells(self) -> np.ndarray:
        """Mask ``(ny, nx)`` of the map's cells that are floor (not inside a solid)."""
        c = self.config
        centres = cell_centres(c.area(), c.radio.cell_size_m, c.radio.plane_height_m)
        if c.scene == "office":
            solid = inside_boxes(centres, [b for group in boxes().values() for b in group])
        else:
            solid = inside_solids(self._mi, self.scene.mi_scene, centres, c.wall_max_thickness_m)
        if solid.all():
            raise ValueError(
                f"region {c.area()}: every cell centre at radio.plane_height_m lies inside "
                "a solid of the scene, so there is no floor to cover"
            )
        return ~solid

    def _add_reflector(self, rt):
        c = self.config.reflector
        self._wall = self.config.wall()
        material = rt.ITURadioMaterial("reflector-material", c.material, thickness=0.01)
        plate = rt.SceneObject(
            fname=str(plate_mesh(c.width_m, c.height_m)), name="reflector",
            radio_material=material,
        )  # fmt: skip
        self.scene.edit(add=plate)
        return plate

    def _place(self, x: np.ndarray, leaves: dict[int, Any] | None) -> dict[str, np.ndarray]:
        """Move the APs (and the reflector) to point ``x``; return their world placement.
        With ``leaves``, the AP angles the map is differentiated by become AD leaves, filed
        there by parameter column."""
        mi, c = self._mi, self.config
        names = self.space.names
        p = dict(zip(names, np.asarray(x, dtype=float)))
        placed = {}
        for i, tx in enumerate(self.aps, start=1):
            pos = np.array([p[f"ap{i}_x"], p[f"ap{i}_y"], c.ap_height_m])
            tx.position = self._point(pos)
            angles = []
            for key in (f"ap{i}_yaw", f"ap{i}_tilt"):
                angle = mi.Float(np.radians(p.get(key, 0.0)))
                if leaves is not None and key in names and self._gradient_mask[names.index(key)]:
                    dr = _drjit()
                    dr.enable_grad(angle)
                    leaves[names.index(key)] = angle
                angles.append(angle)
            # Sionna's orientation is (yaw about z, pitch about y, roll about x); a
            # positive pitch turns the boresight (+x) down: the down-tilt.
            tx.orientation = mi.Point3f(angles[0], angles[1], mi.Float(0.0))
            placed[f"ap{i}_position"] = pos
        if self.reflector is not None:
            r = c.reflector
            focus = np.array([p["focus_x"], p["focus_y"], c.radio.plane_height_m])
            plate = self._wall.place_plate(
                p["refl_u"], p["refl_v"], r.width_m, r.height_m, focus, clearance=r.offset_m
            )
            self.reflector.position = self._point(plate.centre)
            self.reflector.look_at(self._point(focus))
            placed["reflector_position"] = plate.centre
            placed["reflector_normal"] = plate.normal
        return placed

    def _point(self, v: np.ndarray | list[float]) -> Any:
        return self._mi.Point3f(*(float(c) for c in v))

    def _solve(self, seed: int | None = None) -> Any:
        r = self.config.radio
        if self._llvm:
            # Set per map: a process may hold problems with either setting.
            _drjit().set_thread_count(1 if r.deterministic else _THREADS[0])
        return self.solver(
            self.scene, center=self._center, orientation=[0.0, 0.0, 0.0], size=self._size,
            cell_size=[r.cell_size_m, r.cell_size_m], samples_per_tx=r.samples_per_tx,
            max_depth=r.max_depth, specular_reflection=r.specular_reflection,
            diffuse_reflection=r.diffuse_reflection, refraction=r.refraction,
            diffraction=r.diffraction, seed=r.seed if seed is None else seed,
        )  # fmt: skip

    def radio_map(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-AP RSS maps in dBm, shape ``(n_aps, ny, nx)``, and the placement, at ``x``."""
        placed = self._place(x, None)
        self.solver.loop_mode = "symbolic"
        rm = self._solve()
        return to_dbm(np.asarray(rm.rss.numpy(), dtype=float)), placed

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        """The objective over the floor at ``x``; with ``gradient``, its exact derivative
        (per degree) by the AP angles in :meth:`CoverageConfig.gradient_mask`, NaN for the
        parameters the method must estimate."""
        start = time.perf_counter()
        leaves: dict[int, Any] | None = {} if gradient and self._gradient_mask.any() else None
        placed = self._place(x, leaves)
        # Only the "evaluated" loop can be differentiated; it is kept for gradient maps.
        self.solver.loop_mode = "symbolic" if leaves is None else "evaluated"
        rm = self._solve()
        watts = np.asarray(rm.rss.numpy(), dtype=float)
        per_ap = to_dbm(watts)
        combined = per_ap.max(axis=0)
        if combined.shape != self.floor.shape:
            raise ValueError(
                f"the radio map has {combined.shape} cells where the floor has "
                f"{self.floor.shape}; choose radio.cell_size_m to divide the region evenly"
            )
        floor_rss = combined[self.floor]
        obj = self.config.objective
        xy = np.array([placed[f"ap{i}_position"][:2] for i in range(1, len(self.aps) + 1)])
        value = ob.value(floor_rss, obj) - ob.repulsion(xy, obj)
        if np.isnan(value):
            return Evaluation.failed("no floor cell receives any power above floor_dbm")
        v = ob.clipped(floor_rss, obj.floor_dbm)
        lit = float(np.mean(np.isfinite(floor_rss)))
        extras = {
            "p5_rss_dbm": float(np.percentile(v, 5)),
            "coverage_fraction": float(np.mean(v >= obj.threshold_dbm)),
            "lit_fraction": lit,
            **placed,
        }
        grad = None
        if gradient:
            grad = np.full(self.space.dim, np.nan)
            if leaves is not None:
                grad[self._gradient_mask] = self._angle_gradient(rm, watts, floor_rss, leaves)
        extras["radio_map_time_s"] = time.perf_counter() - start
        extras["radio_map_on_gpu"] = float(self.device.gpu)
        warning = ""
        if lit < obj.min_lit_fraction:
            warning = (
                f"only {lit:.1%} of the floor's cells were reached by a ray (below "
                f"objective.min_lit_fraction {obj.min_lit_fraction:g}); the dark ones count "
                f"at floor_dbm ({obj.floor_dbm:g} dBm). Raise radio.max_depth or "
                "radio.samples_per_tx"
            )
        return Evaluation(value=value, extras=extras, gradient=grad, warning=warning)

    def _angle_gradient(
        self, rm: Any, watts: np.ndarray, floor_rss: np.ndarray, leaves: dict[int, Any]
    ) -> np.ndarray:
        """``d value / d angle`` (per degree) for the AD leaves, by one backward pass of the
        objective's cell weights through the map."""
        dr = _drjit()
        w_cell = ob.cell_weights(floor_rss, self.config.objective)  # 1/dB, floor cells
        best = np.argmax(np.where(np.isfinite(watts), watts, -1.0), axis=0)[self.floor]
        rows, cols = np.nonzero(self.floor)
        weights = np.zeros_like(watts)
        with np.errstate(divide="ignore", invalid="ignore"):
            # d dBm / d W = 10 / (ln 10 * W); zero-power cells have zero weight anyway
            per_watt = np.where(
                w_cell != 0, w_cell * 10.0 / (np.log(10.0) * watts[best, rows, cols]), 0.0
            )
        weights[best, rows, cols] = per_watt
        loss = dr.sum(self._mi.TensorXf(weights.astype(np.float32)) * rm.rss, axis=None)
        dr.backward(loss)
        columns = np.flatnonzero(self._gradient_mask)
        return np.radians(1.0) * np.array([float(dr.grad(leaves[j])[0]) for j in columns])


_DEVICE: list[Device] = []
"""The variant this process chose (set on the first import; Mitsuba keeps one per process)."""

_THREADS: list[int] = []
"""Dr.Jit's CPU thread count as this process found it (set on the first problem's setup)."""


def _drjit() -> Any:
    import drjit as dr

    return dr
