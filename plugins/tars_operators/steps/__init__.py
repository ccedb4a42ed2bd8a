"""Tars steps."""
