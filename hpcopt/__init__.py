"""hpcopt: long optimisation campaigns on HPC clusters, resumable from an HDF5 store."""

__version__ = "0.4.0"
