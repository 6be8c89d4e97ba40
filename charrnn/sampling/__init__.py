"""Generating text from a model (and scoring a text), stop strings."""
