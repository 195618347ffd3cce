"""Bring Ray clusters up and down: on this machine, or (later) on a Slurm allocation."""
