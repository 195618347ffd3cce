"""Engines run batches of evaluations: serially here, or (later) on a pool of Ray actors."""

from hpcopt.engine.base import Engine
from hpcopt.engine.local import LocalEngine

__all__ = ["Engine", "LocalEngine"]
