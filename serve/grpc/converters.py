"""gRPC messages to and from what the core already speaks: V2 documents with a binary tail, and plain dicts.

An infer request becomes the V2 JSON document plus binary-extension tail that a REST client would send:
`raw_input_contents` is that extension's byte layout exactly, typed `contents` become JSON-style lists.
So gRPC requests take the same parse (fast path included), checks and error messages as REST ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy.typing as npt
from google.protobuf import json_format
from google.protobuf.message import Message

from serve import binary
from serve.errors import InvalidRequestError
from serve.grpc import open_inference_pb2 as pb
from serve.model import Model
from serve.protocol import InferRequest

# The InferTensorContents field for each datatype's typed values (FP16 has none: raw contents only).
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
M = TypeVar("M", bound=Message)


def parameter_value(parameter: pb.InferParameter) -> Any:
    """The Python value of a request parameter (tritonclient sends `timeout` as int64, `priority` as uint64)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def infer_document(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes]:
    """The V2 document and binary tail a REST client would have sent for the same request."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; expected one per input"
        )
    inputs: list[dict[str, Any]] = []
    for position, tensor in enumerate(request.inputs):
        document: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequestError(f"input {tensor.name!r} has both contents and raw_input_contents")
            document["parameters"] = {"binary_data_size": len(raw[position])}
        else:
            document["data"] = _typed_values(tensor)
        inputs.append(document)
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": output.name} for output in request.outputs]
    parameters = {key: parameter_value(value) for key, value in request.parameters.items()}
    if parameters:
        body["parameters"] = parameters
    return body, b"".join(raw)


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidRequestError(
            f"input {tensor.name!r} is {tensor.datatype!r}: send it in raw_input_contents, it has no typed contents"
        )
    values = list(getattr(tensor.contents, field))
    if field != "bytes_contents":
        return values
    try:
        return [value.decode() for value in values]
    except UnicodeDecodeError:
        raise InvalidRequestError(f"input {tensor.name!r}: a BYTES element is not valid UTF-8") from None


def infer_response(
    model: Model, request: InferRequest, outputs: Mapping[str, npt.NDArray[Any]]
) -> pb.ModelInferResponse:
    """Every requested output in raw_output_contents, which tritonclient's as_numpy reads."""
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version_text, id=request.id or "")
    for name, _ in request.outputs:
        array = outputs[name]
        datatype = model.output_by_name[name].datatype
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(binary.encode_tensor(array, datatype))
    return response


def to_message(document: Mapping[str, Any], message: type[M]) -> M:
    """A REST document as its gRPC message: the field names are the protocol's on both; REST-only extras drop."""
    parsed: M = json_format.ParseDict(document, message(), ignore_unknown_fields=True)
    return parsed


def explain_response(explained: Mapping[str, Any], request_id: str) -> pb.ModelExplainResponse:
    """REST's explanation document as ModelExplainResponse: a row per explained row, a column per input."""
    errors = explained["standard_errors"]
    rows = [
        pb.RowExplanation(
            prediction=prediction,
            columns=[
                pb.ColumnContribution(
                    column=column, values=values, standard_errors=errors[index][column] if errors else []
                )
                for column, values in explained["values"][index].items()
            ],
        )
        for index, prediction in enumerate(explained["prediction"])
    ]
    return pb.ModelExplainResponse(
        model_name=explained["model_name"],
        model_version=explained["model_version"],
        id=request_id,
        method=explained["method"],
        outputs=explained["outputs"],
        base_values=explained["base_values"],
        rows=rows,
        additivity_error=explained["additivity_error"],
        rows_evaluated=explained["rows_evaluated"],
        background_rows=explained["background_rows"],
        permutations=explained["permutations"] or 0,
        seconds=explained["seconds"],
    )
