"""Open Inference Protocol (KServe V2) infer requests and responses: the document around the tensors.

The tensors themselves become a feed in serve/feeds.py; every rejection says what was received and what
was expected, and raises a ServeError with a 4xx status.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy.typing as npt
import orjson

from serve import binary
from serve.columns import Inputs
from serve.errors import InvalidRequestError, describe
from serve.feeds import checked_feed, plain_feed
from serve.model import Model
from serve.values import check_rows


class InferRequest(NamedTuple):
    """A validated infer request. A tuple, not a dataclass: it is built once per request on the hot path."""

    id: str | None
    feed: Inputs
    rows: int
    outputs: tuple[tuple[str, bool], ...]
    """(output name, send as binary) in the order the response lists them."""
    timeout_s: float | None


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidRequestError("empty request body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(_malformed(body, exc)) from None


def _malformed(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, in the caller's terms where orjson's are misleading."""
    try:
        text = body.decode()
    except UnicodeDecodeError as bad:  # orjson reports these as surrogates, at the wrong position
        return f"the body is not UTF-8 text, as JSON must be: byte 0x{body[bad.start]:02x} at offset {bad.start}"
    found = NON_JSON_NUMBER.match(text, exc.pos)  # where orjson stopped: after a sign, or at a value
    if found is not None:  # orjson says "unexpected character" or "no digit after sign": a number was meant
        literal = found.group()
        if text[exc.pos - 1 : exc.pos] == "-":
            literal = "-" + literal
        return f"malformed JSON: {literal} is not a JSON number; send null for a missing value ({exc})"
    return f"malformed JSON: {exc}"


NON_JSON_NUMBER = re.compile(r"(?:NaN|Infinity|inf|nan)\b")
"""Python's and JavaScript's spellings of non-finite numbers."""


def parse_infer_request(document: Any, model: Model, tail: bytes, max_rows: int) -> InferRequest:
    """Validate a V2 infer request against the model's inputs and build its feed."""
    plain = plain_feed(document, model, tail)
    feed: Inputs
    feed, rows = checked_feed(document, model, tail) if plain is None else plain
    check_rows(rows, max_rows)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError(f"'id' must be a string, got {describe(request_id)}")
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise InvalidRequestError(f"'parameters' must be an object, got {describe(parameters)}")
    return InferRequest(
        request_id,
        feed,
        rows,
        _requested_outputs(model, document.get("outputs"), bool(parameters.get("binary_data_output", False))),
        _timeout(parameters.get("timeout")),
    )


def render_infer_response(
    model: Model,
    request: InferRequest,
    outputs: Mapping[str, npt.NDArray[Any]],
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The V2 response body, and the JSON header's length when binary outputs follow it."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, as_binary in request.outputs:
        array = outputs[name]
        datatype = model.output_by_name[name].datatype
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": array.shape}
        if as_binary:
            raw = binary.encode_tensor(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            # reshape(-1) is C-contiguous, which orjson needs; strings are objects, which it does not take.
            flat = array.reshape(-1)
            entry["data"] = flat.tolist() if datatype == "BYTES" else flat
        tensors.append(entry)
    document: dict[str, Any] = {"model_name": model.name, "model_version": model.version_text, "outputs": tensors}
    if request.id is not None:
        document["id"] = request.id
    if parameters:
        document["parameters"] = parameters
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _requested_outputs(model: Model, outputs: Any, binary_default: bool) -> tuple[tuple[str, bool], ...]:
    if outputs is None:
        return _every_output(model.output_names, binary_default)
    if not isinstance(outputs, list) or not outputs:
        raise InvalidRequestError(f"'outputs' must be a non-empty list when given, got {describe(outputs)}")
    requested = []
    for position, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if name not in model.output_by_name:
            raise InvalidRequestError(
                f"outputs[{position}] asks for {name!r}; model {model.name!r} has outputs {list(model.output_names)}"
            )
        parameters = output.get("parameters") or {}
        requested.append((name, bool(parameters.get("binary_data", binary_default))))
    return tuple(requested)


@functools.lru_cache(maxsize=1024)
def _every_output(names: tuple[str, ...], as_binary: bool) -> tuple[tuple[str, bool], ...]:
    """The usual request names no outputs: the same tuple for each, built once."""
    return tuple((name, as_binary) for name in names)


def _timeout(value: Any) -> float | None:
    """tritonclient's `timeout` request parameter, in microseconds."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidRequestError(f"parameters.timeout must be a positive number of microseconds, got {value!r}")
    return value / 1e6


def quality_requested(value: Any) -> bool:
    """parameters.quality (V2) or ?quality= (records): per-row input flags in the answer."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise InvalidRequestError(f"quality must be true or false, got {describe(value)}")
