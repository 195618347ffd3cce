"""Engines run batches of evaluations: serially here, or on a pool of Ray actors."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hpcopt.engine.base import Engine
from hpcopt.engine.local import LocalEngine, LocalEngineConfig
from hpcopt.engine.ray_pool import RayEngineConfig

EngineConfig = Annotated[LocalEngineConfig | RayEngineConfig, Field(discriminator="kind")]


def build_engine(config: LocalEngineConfig | RayEngineConfig) -> Engine:
    """The engine a config section names (Ray is imported only when asked for)."""
    if isinstance(config, RayEngineConfig):
        from hpcopt.engine.ray_pool import RayEngine

        return RayEngine(config)
    return LocalEngine()


__all__ = ["Engine", "EngineConfig", "LocalEngine", "build_engine"]
