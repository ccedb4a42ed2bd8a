"""Tars's pages in the Airflow UI: server templates (autoescaped), static files, security headers."""
