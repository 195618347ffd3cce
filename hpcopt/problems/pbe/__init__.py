"""dPBE problem: fit agglomeration and breakage kernels to particle-size distributions."""
