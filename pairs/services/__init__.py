"""Writes of the selection layer, one module per concern."""
