"""The JSON Schema of an app config, for editors (``# yaml-language-server: $schema=…``)."""

from __future__ import annotations

from typing import Any

from tars_operators.config.schema import AppConfig

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def app_config_schema() -> dict[str, Any]:
    """AppConfig's JSON Schema (validation mode: what a YAML file may contain)."""
    schema = AppConfig.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_URI, **schema, "title": "Tars app config"}
