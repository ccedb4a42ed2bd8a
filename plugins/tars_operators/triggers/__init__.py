"""Tars triggers."""
