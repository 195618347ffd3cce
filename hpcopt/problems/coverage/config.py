"""The coverage problem's config: modes, parameters, radio-map settings, objective.

Cheap to import (no Sionna): the driver validates configs, builds spaces and checks
constraints with it; the radio maps are computed by :mod:`hpcopt.problems.coverage.problem`
on the workers.

Parameters, in metres and degrees (world coordinates):

- ``1ap``: ``ap1_x, ap1_y`` (the region less ``ap_margin_m`` on each side), the AP at
  ``ap_height_m``; ``ap1_yaw`` (degrees about the vertical, in ``[-180, 180)``) when the
  antenna's yaw changes the map (the ``tr38901`` pattern, or an array with several
  columns), and ``ap1_tilt`` (down-tilt in degrees, within ``tilt_deg``) when asked for;
- ``2ap``: the same for ``ap2``; the two APs stay ``min_separation_m`` apart;
- ``2ap_reflector``: also ``refl_u, refl_v`` in ``[0, 1]``, the reflector's centre on its
  wall rectangle, and ``focus_x, focus_y``, the point at measurement height it faces
  (within ``reflector.focus_region``; a focus behind the wall's plane is infeasible).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from hpcopt.core.evaluation import Direction
from hpcopt.core.space import Param, Space
from hpcopt.problems.base import Confirmation, ProblemConfig
from hpcopt.problems.coverage.office import HEIGHT, REGION, WALLS_FOR_REFLECTORS, wall_face_normal
from hpcopt.problems.coverage.reflector import WallFrame
from hpcopt.problems.coverage.scene import SceneError, resolve_scene, scene_bounds

Mode = Literal["1ap", "2ap", "2ap_reflector"]
Point3 = tuple[float, float, float]


class _Section(BaseModel):
    """A config section: unknown keys refused, numbers finite, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RadioMapSettings(_Section):
    """How each radio map is computed (Sionna RT ``RadioMapSolver``)."""

    frequency_hz: float = Field(5.2e9, gt=0)
    tx_power_dbm: float = 20.0
    pattern: Literal["iso", "dipole", "hw_dipole", "tr38901"] = "iso"
    polarization: Literal["V", "H", "VH", "cross"] = "V"
    array_rows: int = Field(1, ge=1)
    array_cols: int = Field(1, ge=1)
    cell_size_m: float = Field(0.5, gt=0)
    plane_height_m: float = Field(1.5, gt=0)
    samples_per_tx: int = Field(10**5, ge=1000)
    max_depth: int = Field(13, ge=0)
    specular_reflection: bool = True
    diffuse_reflection: bool = False
    refraction: bool = True
    diffraction: bool = False
    seed: int = 42
    deterministic: bool = True
    """One Dr.Jit thread per map on the CPU, so that the map's float32 sums run in one
    order and the same placement gives the same map bit for bit in any process (with more
    threads, which thread sums which rays varies from run to run). Costs a process's other
    cores: run one worker per core instead. CUDA maps are not covered."""


class Objective(_Section):
    """What is maximised, over every floor cell of the region (formulas in
    :mod:`hpcopt.problems.coverage.objective`): unlit cells, and cells below ``floor_dbm``,
    count at ``floor_dbm``.

    ``p5``: the ``percentile``-th percentile of the combined map (best server per cell),
    dBm. ``softmin`` / ``softmin_lit``: a smooth minimum with temperature
    ``temperature_db`` over all floor cells / the lit ones. ``coverage``: the fraction of
    floor cells at or above ``threshold_dbm``; ``soft_coverage``: its sigmoid form. An
    evaluation whose lit share of the floor is below ``min_lit_fraction`` is flagged (once
    per trial). ``repulsion_weight`` subtracts ``w * exp(-(d / repulsion_length_m)^2)`` per
    AP pair at distance ``d`` (0: off).
    """

    kind: Literal["p5", "softmin", "softmin_lit", "coverage", "soft_coverage"] = "p5"
    percentile: float = Field(5.0, gt=0, lt=100)
    floor_dbm: float = Field(-120.0, allow_inf_nan=False)
    temperature_db: float = Field(3.0, gt=0, allow_inf_nan=False)
    threshold_dbm: float = Field(-65.0, allow_inf_nan=False)
    min_lit_fraction: float = Field(0.99, ge=0, le=1)
    repulsion_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    repulsion_length_m: float = Field(2.0, gt=0, allow_inf_nan=False)


class Confirm(_Section):
    """Re-scoring of a trial's ``top_k`` best distinct placements when it ends: once per
    seed in ``seeds`` with ``samples_per_tx`` rays (0: off)."""

    top_k: int = Field(0, ge=0)
    samples_per_tx: int = Field(10**6, ge=1000)
    seeds: list[int] = Field(default_factory=lambda: [1001, 1002, 1003, 1004])

    @model_validator(mode="after")
    def _seeds(self) -> Confirm:
        if self.top_k and len(set(self.seeds)) < 2:
            raise ValueError("seeds: needs at least two different seeds for a standard error")
        return self


class Reflector(_Section):
    """A flat metal plate on a wall: the wall rectangle by two opposite corners (or a named
    wall of the shipped office), its size, the least gap between the plate and the wall
    face at any orientation (``offset_m``), and where its focus may lie (``focus_region``
    ``(x0, y0, x1, y1)``, by default the whole region)."""

    wall: str | tuple[Point3, Point3] = "north_room_2"
    width_m: float = Field(1.0, gt=0)
    height_m: float = Field(1.0, gt=0)
    offset_m: float = Field(0.05, ge=0)
    material: str = "metal"
    focus_region: tuple[float, float, float, float] | None = None


class CoverageConfig(ProblemConfig):
    """``problem: {name: coverage, mode: 1ap}``: place Wi-Fi APs (and a reflector) to
    maximise coverage over a floor, with Sionna RT radio maps."""

    name: Literal["coverage"]
    mode: Mode = "1ap"
    scene: str = "office"
    region: tuple[float, float, float, float] | None = None
    ap_height_m: float = Field(2.5, gt=0)
    ap_margin_m: float = Field(0.5, ge=0)
    min_separation_m: float = Field(3.0, ge=0)
    tilt_deg: tuple[float, float] | None = None
    wall_max_thickness_m: float = Field(1.0, gt=0)
    reflector: Reflector = Reflector()
    radio: RadioMapSettings = RadioMapSettings()
    objective: Objective = Objective()
    confirm: Confirm = Confirm()

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> CoverageConfig:
        checks_files = info.context is None or info.context.get("check_files", True)
        if checks_files:
            try:  # a scene that is not there says so before its region is asked for
                resolve_scene(self.scene)
            except SceneError as exc:
                raise ValueError(f"scene: {exc}") from None
        x0, y0, x1, y1 = self.area()
        if not (x0 + 2 * self.ap_margin_m < x1 and y0 + 2 * self.ap_margin_m < y1):
            raise ValueError(
                f"region must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, and wider than "
                f"twice ap_margin_m ({self.ap_margin_m} m); got {self.area()}"
            )
        if not self.radio.plane_height_m < self.ap_height_m:
            raise ValueError(
                f"ap_height_m ({self.ap_height_m} m) must be above radio.plane_height_m "
                f"({self.radio.plane_height_m} m), the height the floor is measured at"
            )
        if self.tilt_deg is not None:
            lo, hi = self.tilt_deg
            if not -90.0 <= lo < hi <= 90.0:
                raise ValueError(f"tilt_deg must be [low, high] within [-90, 90]; got {lo}, {hi}")
            if not self.tilt_matters:
                raise ValueError(
                    "tilt_deg: an 'iso' pattern on a single antenna radiates the same in "
                    "every direction, so tilting it changes nothing; pick a pattern "
                    "(dipole, hw_dipole, tr38901) or an array"
                )
        if checks_files:
            self._check_scene()
        if self.mode == "2ap_reflector":
            self._check_reflector()
        return self

    def _check_scene(self) -> None:
        """The scene exists and holds the region, the APs and the measurement plane."""
        try:
            xml = resolve_scene(self.scene)
            bounds = scene_bounds(xml)
        except SceneError as exc:
            raise ValueError(f"scene: {exc}") from None
        if self.scene == "office":
            lo, hi = np.array([*REGION[:2], 0.0]), np.array([*REGION[2:], HEIGHT])
        elif bounds is None:
            return
        else:
            lo, hi = bounds
        x0, y0, x1, y1 = self.area()
        eps = 1e-6
        # The office's floor is all there is; another scene's meshes may be a few objects
        # in open space, so its region need only meet them.
        if self.scene == "office":
            outside = x0 < lo[0] - eps or y0 < lo[1] - eps or x1 > hi[0] + eps or y1 > hi[1] + eps
        else:
            outside = x1 < lo[0] - eps or y1 < lo[1] - eps or x0 > hi[0] + eps or y0 > hi[1] + eps
        if outside:
            raise ValueError(
                f"region {self.area()} reaches outside the scene {self.scene!r}, which spans "
                f"x {lo[0]:g}..{hi[0]:g} m, y {lo[1]:g}..{hi[1]:g} m"
            )
        # Only the office is known to have a ceiling: elsewhere the top of the meshes may
        # be a ground plane or a roof an AP is mounted above.
        ceiling = hi[2] if self.scene == "office" else np.inf
        if self.ap_height_m >= ceiling or self.radio.plane_height_m <= lo[2]:
            raise ValueError(
                f"ap_height_m ({self.ap_height_m} m) and radio.plane_height_m "
                f"({self.radio.plane_height_m} m) must lie between the scene's floor and "
                f"ceiling, z {lo[2]:g}..{ceiling:g} m"
            )

    def _check_reflector(self) -> None:
        wall = self.reflector.wall
        if isinstance(wall, str):
            if self.scene != "office":
                raise ValueError("reflector.wall by name needs scene: office; give two corners")
            if wall not in WALLS_FOR_REFLECTORS:
                raise ValueError(
                    f"reflector.wall: unknown wall {wall!r}; the office has "
                    f"{sorted(WALLS_FOR_REFLECTORS)}"
                )
        else:
            try:
                self.wall()
            except ValueError as exc:
                raise ValueError(f"reflector.wall: {exc}") from None
            if self.scene == "office" and wall_face_normal(*wall) is None:
                raise ValueError(
                    f"reflector.wall: the rectangle {wall} does not lie on a wall face "
                    "of the office; name one of its walls or give corners on a face"
                )
        x0, y0, x1, y1 = self.area()
        fx0, fy0, fx1, fy1 = self.focus_area()
        if not (x0 <= fx0 < fx1 <= x1 and y0 <= fy0 < fy1 <= y1):
            raise ValueError(
                f"reflector.focus_region {self.focus_area()} must be (x0, y0, x1, y1) with "
                f"x0 < x1, y0 < y1, inside the region {self.area()}"
            )

    def wall(self) -> WallFrame:
        """The reflector's wall: a named wall of the shipped office, or two corners (its
        normal then points towards the region's centre)."""
        wall = self.reflector.wall
        if isinstance(wall, str):
            a, b, normal = WALLS_FOR_REFLECTORS[wall]
            return WallFrame.from_corners(a, b, towards=np.add(a, normal))
        if self.scene == "office":
            normal = wall_face_normal(*wall)
            if normal is not None:  # the face's own side, not the region's centre
                return WallFrame.from_corners(*wall, towards=np.add(wall[0], normal))
        x0, y0, x1, y1 = self.area()
        centre = ((x0 + x1) / 2, (y0 + y1) / 2, self.radio.plane_height_m)
        return WallFrame.from_corners(*wall, towards=centre)

    def focus_area(self) -> tuple[float, float, float, float]:
        """Where the reflector's focus may lie ``(x0, y0, x1, y1)``, metres."""
        return self.reflector.focus_region or self.area()

    def area(self) -> tuple[float, float, float, float]:
        """The region of interest ``(x0, y0, x1, y1)`` in metres."""
        if self.region is not None:
            return self.region
        if self.scene == "office":
            return REGION
        raise ValueError("region is required for a scene other than the shipped office")

    def space(self) -> Space:
        x0, y0, x1, y1 = self.area()
        m = self.ap_margin_m  # APs hang in the room, not inside its outer walls
        params = []
        for ap in ("ap1", "ap2")[: 1 if self.mode == "1ap" else 2]:
            params += [Param(f"{ap}_x", x0 + m, x1 - m), Param(f"{ap}_y", y0 + m, y1 - m)]
            if self.yaw_matters:
                params.append(Param(f"{ap}_yaw", -180.0, 180.0, periodic=True))
            if self.tilt_deg is not None:
                params.append(Param(f"{ap}_tilt", *self.tilt_deg))
        if self.mode == "2ap_reflector":
            fx0, fy0, fx1, fy1 = self.focus_area()
            params += [Param("refl_u", 0.0, 1.0), Param("refl_v", 0.0, 1.0)]
            params += [Param("focus_x", fx0, fx1), Param("focus_y", fy0, fy1)]
        return Space(params)

    @property
    def yaw_matters(self) -> bool:
        """Whether turning an AP about the vertical changes its map (so its yaw is
        searched): a ``tr38901`` pattern, an array with several columns, or any tilted
        antenna. An upright dipole is symmetric about the vertical and an ``iso`` antenna
        about everything."""
        return (
            self.radio.pattern == "tr38901"
            or self.radio.array_cols > 1
            or self.tilt_deg is not None
        )

    @property
    def tilt_matters(self) -> bool:
        """Whether tilting an AP changes its map: any pattern but a single ``iso`` antenna."""
        r = self.radio
        return r.pattern != "iso" or r.array_rows > 1 or r.array_cols > 1

    def gradient_mask(self) -> np.ndarray:
        """The parameters the problem differentiates exactly (Dr.Jit AD through the map):
        AP yaw and tilt, with a differentiable objective. Positions and the reflector are
        left to the method (a map's position derivative is zero or far too small)."""
        names = self.space().names
        if self.objective.kind == "coverage":
            return np.zeros(len(names), dtype=bool)
        return np.array([n.endswith(("_yaw", "_tilt")) for n in names], dtype=bool)

    def confirmation(self) -> Confirmation | None:
        """``confirm.top_k`` best placements re-scored with ``confirm.samples_per_tx`` rays,
        once per seed in ``confirm.seeds``."""
        c = self.confirm
        if not c.top_k:
            return None
        variants = tuple(
            self.model_copy(
                update={
                    "radio": self.radio.model_copy(
                        update={"samples_per_tx": c.samples_per_tx, "seed": seed}
                    ),
                    "confirm": Confirm(),
                }
            )
            for seed in c.seeds
        )
        return Confirmation(top_k=c.top_k, problems=variants)

    @property
    def label(self) -> str:
        return f"coverage ({self.mode}, {self.scene})"

    @property
    def direction(self) -> Direction:
        return "maximize"

    def feasible(self, points: np.ndarray) -> np.ndarray:
        """Two APs at least ``min_separation_m`` apart; a reflector's focus in front of its
        wall."""
        p = np.atleast_2d(points)
        ok = np.ones(len(p), dtype=bool)
        names = self.space().names
        if self.mode != "1ap" and self.min_separation_m > 0:
            a = p[:, [names.index("ap1_x"), names.index("ap1_y")]]
            b = p[:, [names.index("ap2_x"), names.index("ap2_y")]]
            ok &= np.hypot(*(a - b).T) >= self.min_separation_m
        if self.mode == "2ap_reflector":
            focus = p[:, [names.index("focus_x"), names.index("focus_y")]]
            ok &= self.wall().in_front(focus)
        return ok
