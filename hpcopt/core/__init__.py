"""The bottom layer: the search space, plain data, events, constraints, the evaluation record,
atomic files and process identity. It imports nothing else from hpcopt."""
