"""Running on a cluster: Slurm submission and the allocation's runtime (Ray head and workers),
Slurm queries, and container launchers."""
