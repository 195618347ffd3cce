"""The campaign folder: its store (campaign file, trial journals), locks and job records."""
