"""Engines run batches of evaluations: serially here, or on a pool of Ray actors.

Build one from its config section with :func:`hpcopt.config.registry.build_engine`.
"""

from __future__ import annotations

from hpcopt.engine.base import Engine
from hpcopt.engine.local import LocalEngine, LocalEngineConfig

__all__ = ["Engine", "LocalEngine", "LocalEngineConfig"]
