"""The server's own OpenAPI 3 document (/openapi.json): what schemathesis fuzzes and clients can read."""

from __future__ import annotations

from typing import Any

from serve import __version__
from serve.datatypes import V2_TO_NUMPY
from serve.errors import ERRORS as ERROR_TABLE

ERROR = {"$ref": "#/components/schemas/Error"}
ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
# Every error status the server answers with, from the one error table, each naming its error classes.
ERRORS = {
    str(status): {
        "description": ", ".join(sorted(kind.__name__ for kind, (code, _) in ERROR_TABLE.items() if code == status)),
        "content": {"application/json": {"schema": ERROR}},
    }
    for status in sorted({status for status, _ in ERROR_TABLE.values()})
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "RequestTensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": sorted(V2_TO_NUMPY)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"type": "array", "items": {}},
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": ANY_OBJECT,
            "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/RequestTensor"}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": ANY_OBJECT},
                },
            },  # fmt: skip
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": ANY_OBJECT},
        },
    },  # fmt: skip
    "ExplainParameters": {
        "type": "object",
        "properties": {
            "method": {"type": "string", "enum": ["exact", "permutation"]},
            "permutations": {"type": "integer", "minimum": 2, "maximum": 10_000, "multipleOf": 2},
            "seed": {"type": "integer", "minimum": 0},
        },
    },
    "ExplainRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"$ref": "#/components/schemas/ExplainParameters"},
            "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/RequestTensor"}},
        },
    },
    "ExplainInstances": {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {"type": "array", "minItems": 1, "items": ANY_OBJECT},
            "parameters": {"$ref": "#/components/schemas/ExplainParameters"},
        },
    },
    "Explanation": {
        "type": "object",
        "required": [
            "model_name",
            "method",
            "outputs",
            "columns",
            "base_values",
            "prediction",
            "values",
            "additivity_error",
            "rows_evaluated",
            "seconds",
        ],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "method": {"type": "string", "enum": ["exact", "permutation"]},
            "outputs": {"type": "array", "items": {"type": "string"}},
            "columns": {"type": "array", "items": {"type": "string"}},
            "base_values": {"type": "array", "items": {"type": "number"}},
            "prediction": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "values": {"type": "array", "items": ANY_OBJECT},
            "standard_errors": {"type": "array", "nullable": True, "items": ANY_OBJECT},
            "additivity_error": {"type": "number"},
            "rows_evaluated": {"type": "integer"},
            "background_rows": {"type": "integer"},
            "permutations": {"type": "integer", "nullable": True},
            "seconds": {"type": "number"},
        },
    },  # fmt: skip
    "RepositoryIndexRequest": {
        "type": "object",
        "properties": {"ready": {"type": "boolean", "description": "only the versions that serve"}},
    },
    "RepositoryRequest": {
        "type": "object",
        "description": "Triton's load / unload body: tabserve takes no parameters but unload's unload_dependents",
        "properties": {"parameters": {"type": "object"}},
        "additionalProperties": False,
    },
    "Instances": {
        "type": "object",
        "description": '{"instances": [records]}, or one bare record of feature values',
        "properties": {"instances": {"type": "array", "minItems": 1, "items": ANY_OBJECT}},
    },  # fmt: skip
}


def _operation(
    summary: str, params: list[Any], body: str | None = None, response: Any = ANY_OBJECT, body_required: bool = True
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": response}}}, **ERRORS},
    }
    if body is not None:
        schema = {"$ref": f"#/components/schemas/{body}"} if body in SCHEMAS else ANY_OBJECT
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": schema}}}
    return operation


def openapi_document(model_names: list[str], versions: list[str]) -> dict[str, Any]:
    """The document for the models loaded now: their names and versions are the path parameters' enums."""
    name_schema: dict[str, Any] = {"type": "string", "enum": model_names} if model_names else {"type": "string"}
    version_schema: dict[str, Any] = {"type": "string", "enum": versions} if versions else {"type": "string"}
    MODEL = {"name": "model_name", "in": "path", "required": True, "schema": name_schema}
    VERSION = {"name": "model_version", "in": "path", "required": True, "schema": version_schema}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _operation("liveness", [])},
        "/v2/health/ready": {"get": _operation("readiness", [])},
        "/v2": {"get": _operation("server metadata", [])},
        "/v2/models/stats": {"get": _operation("statistics of every model", [])},
        "/v2/repository/index": {
            "post": _operation("repository index", [], body="RepositoryIndexRequest", body_required=False)
        },
        "/predict": {"post": _operation("the seed article's endpoint on the default model", [], body="record")},
    }
    for prefix, params in (
        ("/v2/models/{model_name}", [MODEL]),
        ("/v2/models/{model_name}/versions/{model_version}", [MODEL, VERSION]),
    ):
        paths[prefix] = {"get": _operation("model metadata", params)}
        paths[prefix + "/ready"] = {"get": _operation("model readiness", params)}
        paths[prefix + "/config"] = {"get": _operation("Triton model configuration", params)}
        paths[prefix + "/stats"] = {"get": _operation("model statistics", params)}
        paths[prefix + "/quality"] = {
            "get": _operation("input quality and drift: counts, recent window, PSI and status per feature", params)
        }
        paths[prefix + "/infer"] = {
            "post": _operation(
                "inference (Open Inference Protocol)",
                params,
                "InferRequest",
                {"$ref": "#/components/schemas/InferResponse"},
            )  # fmt: skip
        }
        paths[prefix + "/explain"] = {
            "post": _operation(
                "Shapley values per input column (exact up to 12 columns, else sampled)",
                params,
                "ExplainRequest",
                {"$ref": "#/components/schemas/Explanation"},
            )  # fmt: skip
        }
    for prefix, params in (
        ("/v1/models/{model_name}", [MODEL]),
        ("/v1/models/{model_name}/versions/{model_version}", [MODEL, VERSION]),
    ):
        paths[prefix + ":predict"] = {"post": _operation("records in, predictions out", params, "Instances")}
        paths[prefix + ":explain"] = {
            "post": _operation(
                "records in, Shapley values out",
                params,
                "ExplainInstances",
                {"$ref": "#/components/schemas/Explanation"},
            )
        }
        paths[prefix + "/golden"] = {"get": _operation("golden vectors", params)}
    for action in ("load", "unload"):
        paths[f"/v2/repository/models/{{model_name}}/{action}"] = {
            "post": _operation(f"{action} a model (admin)", [MODEL], body="RepositoryRequest", body_required=False)
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tabserve",
            "version": __version__,
            "description": "scikit-learn pipelines as ONNX over the Open Inference Protocol",
        },  # fmt: skip
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
