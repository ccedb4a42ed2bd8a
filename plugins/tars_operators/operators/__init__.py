"""Tars operators."""
