"""The API's row schema is derived from the engine's declaration of a row (inference.rows.Row)."""

from __future__ import annotations

from inference.rows import FIELD_NAMES, description
from lensweb.api.schemas import AnalysisRow


def test_the_api_row_schema_is_the_declaration():
    schema = AnalysisRow.model_json_schema()
    assert tuple(schema["properties"]) == FIELD_NAMES
    assert set(schema["required"]) == {"position", "token", "explanation", "mse"}
    assert all(schema["properties"][name]["description"] == description(name) for name in FIELD_NAMES)
