"""The ``hpcopt`` command line: one module per group of subcommands, ``main`` the entry."""

from hpcopt.cli.main import main

__all__ = ["main"]
