"""Writes of the execution layer, one module per concern."""
