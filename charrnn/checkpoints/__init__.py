"""Checkpoint files: the npz format, what a checkpoint holds and how a model is rebuilt from it,
and the run directory's files."""
