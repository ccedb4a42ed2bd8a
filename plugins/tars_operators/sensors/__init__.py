"""Tars sensors."""
