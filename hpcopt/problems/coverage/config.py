"""The coverage problem's config: modes, parameters, radio-map settings, objective.

Cheap to import (no Sionna): the driver validates configs, builds spaces and checks
constraints with it; the radio maps are computed by :mod:`hpcopt.problems.coverage.problem`
on the workers.

Parameters, in metres and degrees (world coordinates):

- ``1ap``: ``ap1_x, ap1_y`` (the region less ``ap_margin_m`` on each side) and, for a
  directional antenna pattern, ``ap1_yaw`` — the AP at ``ap_height_m``, turned by ``yaw``
  degrees about the vertical;
- ``2ap``: the same for ``ap2``; the two APs stay ``min_separation_m`` apart;
- ``2ap_reflector``: also ``refl_u, refl_v`` in ``[0, 1]``, the reflector's centre on its
  wall rectangle, and ``focus_x, focus_y``, the point at measurement height it faces.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpcopt.problems.base import Direction, ProblemConfig
from hpcopt.space import Param, Space

Mode = Literal["1ap", "2ap", "2ap_reflector"]
Point3 = tuple[float, float, float]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    max_depth: int = Field(5, ge=0)
    specular_reflection: bool = True
    diffuse_reflection: bool = False
    refraction: bool = True
    diffraction: bool = False
    seed: int = 42


class Objective(_Section):
    """What is maximised, over the cells inside the region whose combined RSS is above
    ``floor_dbm`` (cells inside walls or in a reflector's shadow would otherwise trap it).

    ``p5``: the ``percentile``-th percentile of the combined map (best server per cell), in
    dBm. ``softmin``: a smooth minimum, ``-T log mean exp(-rss / T)`` with ``T =
    temperature_db``. ``coverage``: the fraction of cells at or above ``threshold_dbm``.
    """

    kind: Literal["p5", "softmin", "coverage"] = "p5"
    percentile: float = Field(5.0, gt=0, lt=100)
    floor_dbm: float = -150.0
    temperature_db: float = Field(3.0, gt=0)
    threshold_dbm: float = -65.0


class Reflector(_Section):
    """A flat metal plate on a wall: the wall rectangle by two opposite corners (or a named
    wall of the shipped office), its size, and how far off the wall its centre sits."""

    wall: str | tuple[Point3, Point3] = "north_room_2"
    width_m: float = Field(1.0, gt=0)
    height_m: float = Field(1.0, gt=0)
    offset_m: float = Field(0.05, ge=0)
    material: str = "metal"


class CoverageConfig(ProblemConfig):
    """``problem: {name: coverage, mode: 1ap}``: place Wi-Fi APs (and a reflector) to
    maximise coverage over a floor, with Sionna RT radio maps."""

    problem_class = "hpcopt.problems.coverage.problem:CoverageProblem"

    name: Literal["coverage"]
    mode: Mode = "1ap"
    scene: str = "office"
    region: tuple[float, float, float, float] | None = None
    ap_height_m: float = Field(2.5, gt=0)
    ap_margin_m: float = Field(0.5, ge=0)
    min_separation_m: float = Field(3.0, ge=0)
    reflector: Reflector = Reflector()
    radio: RadioMapSettings = RadioMapSettings()
    objective: Objective = Objective()

    @model_validator(mode="after")
    def _check(self) -> CoverageConfig:
        x0, y0, x1, y1 = self.area()
        if not (x0 + 2 * self.ap_margin_m < x1 and y0 + 2 * self.ap_margin_m < y1):
            raise ValueError(
                f"region must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, and wider than "
                f"twice ap_margin_m ({self.ap_margin_m} m); got {self.area()}"
            )
        if self.mode == "2ap_reflector" and isinstance(self.reflector.wall, str):
            from hpcopt.problems.coverage.office import WALLS_FOR_REFLECTORS

            if self.scene != "office":
                raise ValueError("reflector.wall by name needs scene: office; give two corners")
            if self.reflector.wall not in WALLS_FOR_REFLECTORS:
                raise ValueError(
                    f"reflector.wall: unknown wall {self.reflector.wall!r}; the office has "
                    f"{sorted(WALLS_FOR_REFLECTORS)}"
                )
        return self

    def area(self) -> tuple[float, float, float, float]:
        """The region of interest ``(x0, y0, x1, y1)`` in metres."""
        if self.region is not None:
            return self.region
        if self.scene == "office":
            from hpcopt.problems.coverage.office import REGION

            return REGION
        raise ValueError("region is required for a scene other than the shipped office")

    def space(self) -> Space:
        x0, y0, x1, y1 = self.area()
        m = self.ap_margin_m  # APs hang in the room, not inside its outer walls
        params = []
        for ap in ("ap1", "ap2")[: 1 if self.mode == "1ap" else 2]:
            params += [Param(f"{ap}_x", x0 + m, x1 - m), Param(f"{ap}_y", y0 + m, y1 - m)]
            if self.directional:
                params.append(Param(f"{ap}_yaw", -180.0, 180.0))
        if self.mode == "2ap_reflector":
            params += [Param("refl_u", 0.0, 1.0), Param("refl_v", 0.0, 1.0)]
            params += [Param("focus_x", x0, x1), Param("focus_y", y0, y1)]
        return Space(params)

    @property
    def directional(self) -> bool:
        """Whether the APs' pointing direction matters (and is searched): not for ``iso``."""
        return self.radio.pattern != "iso"

    @property
    def label(self) -> str:
        return f"coverage ({self.mode}, {self.scene})"

    @property
    def direction(self) -> Direction:
        return "maximize"

    def feasible(self, points: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(points)
        if self.mode == "1ap" or self.min_separation_m == 0:
            return np.ones(len(p), dtype=bool)
        names = self.space().names
        a = p[:, [names.index("ap1_x"), names.index("ap1_y")]]
        b = p[:, [names.index("ap2_x"), names.index("ap2_y")]]
        return np.hypot(*(a - b).T) >= self.min_separation_m
