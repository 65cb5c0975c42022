"""The OpenAPI document's extras: the task endpoints read their bodies themselves (JSON,
MIDI bytes or a form), so their request bodies, answers and the schemas these refer to are
declared here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from midilm.server.schemas import ErrorBody, ScoreJSON, ScoresAnswer

__all__ = ["body_doc", "openapi_with_schemas"]


def openapi_with_schemas(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document plus the schemas the hand-read bodies refer to."""
    from pydantic.json_schema import models_json_schema

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        _, defs = models_json_schema(
            [(m, "validation") for m in (ScoreJSON, ScoresAnswer, ErrorBody)],
            ref_template="#/components/schemas/{model}",
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in defs.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        app.openapi_schema = document
        return document

    return openapi


def body_doc(
    params: type[BaseModel] | None, *, score: bool = True, answer: str = "score"
) -> dict[str, Any]:
    """The OpenAPI request body and answers of an endpoint that reads its body itself
    (JSON, MIDI bytes or a form, which FastAPI cannot declare as one parameter)."""
    json_schema: dict[str, Any] = {"type": "object", "properties": {}}
    if params is not None:
        json_schema = params.model_json_schema(ref_template="#/components/schemas/{model}")
        json_schema.pop("$defs", None)
        json_schema.pop("title", None)
    if score:
        json_schema = {
            **json_schema,
            "properties": {
                "score": {"$ref": "#/components/schemas/ScoreJSON"},
                **json_schema.get("properties", {}),
            },
        }
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if score:
        binary = {"type": "string", "format": "binary"}
        content["audio/midi"] = {"schema": binary}
        form_props = {
            "file": binary,
            **{k: v for k, v in json_schema["properties"].items() if k != "score"},
        }
        content["multipart/form-data"] = {"schema": {"type": "object", "properties": form_props}}
    responses: dict[str, Any]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    if answer == "render":
        responses = {
            "200": {
                "description": "WAV or PNG bytes",
                "content": {
                    "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        }
    elif answer == "convert":
        responses = {
            "200": {
                "description": "the score",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ScoreJSON"}},
                    "audio/midi": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        }
    else:
        responses = {
            "200": {
                "description": "the score (MIDI), the candidates (JSON) or "
                "progress events (text/event-stream)",
                "content": {
                    "audio/midi": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/ScoresAnswer"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            }
        }
    for status, what in (
        (400, "not MIDI / not JSON"),
        (413, "body too large"),
        (422, "a parameter out of bounds"),
        (429, "queue full"),
    ):
        responses[str(status)] = {"description": what, "content": error}
    return {"requestBody": {"content": content, "required": score}, "responses": responses}
