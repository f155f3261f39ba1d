"""Records for people: {"instances": [{"age": 35}, ...]} in, {"predictions": [...]} out.

A key maps to the input of the same name; a missing key or null is a missing value where the model
imputes one (NaN for numbers, '' for categories), and an error where it does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from serve.columns import Feed
from serve.errors import InvalidRequestError, describe
from serve.model import Model
from serve.values import check_finite, check_rows

MISSING_BY_DATATYPE: dict[str, Any] = {"FP32": math.nan, "FP64": math.nan, "BYTES": ""}


def parse_instances(document: Any, model: Model, max_rows: int) -> tuple[Feed, int]:
    """Validate {"instances": [...]} (or one bare record) and build the model's feed."""
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidRequestError(f"'instances' must be a list of records, got {type(instances).__name__}")
        where = _listed
    elif isinstance(document, dict):
        instances = [document]
        where = _bare  # its errors name its fields, not a list the caller never sent
    else:
        raise InvalidRequestError(
            "expected a JSON object: one record of feature values, or "
            f'{{"instances": [records]}}; got {describe(document)}'
        )
    check_rows(len(instances), max_rows)
    known = model.input_by_name
    for index, record in enumerate(instances):
        if not isinstance(record, dict):
            raise InvalidRequestError(f"{where(index)} must be an object of feature values, got {record!r:.80}")
        unknown = [key for key in record if key not in known]
        if unknown:
            raise InvalidRequestError(f"{where(index)} has unknown field(s) {unknown}; expected {list(known)}")
    feed: Feed = {}
    for spec in model.inputs:
        missing = MISSING_BY_DATATYPE.get(spec.datatype) if spec.name in model.imputed else None
        column = []
        for index, record in enumerate(instances):
            value = record.get(spec.name)
            if value is None:
                if missing is None:
                    raise InvalidRequestError(
                        f"{where(index)} lacks {spec.name!r}, which model {model.name!r} needs (it has no imputer)"
                    )
                value = missing
            elif spec.datatype == "BYTES":
                if not isinstance(value, str):
                    raise InvalidRequestError(f"{where(index, spec.name)} must be a string, got {value!r:.80}")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequestError(f"{where(index, spec.name)} must be a number, got {value!r:.80}")
            column.append(value)
        with np.errstate(over="ignore"):
            array = np.array(column, dtype=spec.dtype).reshape(len(instances), *[max(dim, 1) for dim in spec.shape[1:]])
        if array.dtype.kind == "f":
            check_finite(array, spec.name, model, column)  # a number beyond FP32's range arrives here as infinity
        feed[spec.name] = array
    return feed, len(instances)


def _listed(index: int, field: str | None = None) -> str:
    return f"instances[{index}]" if field is None else f"instances[{index}].{field}"


def _bare(index: int, field: str | None = None) -> str:
    return "the record" if field is None else repr(field)


def render_predictions(model: Model, outputs: Mapping[str, npt.NDArray[Any]]) -> list[Any]:
    """Regression: one number per record. Classification: label plus probabilities by class name."""
    if model.task == "classification" and model.classes and len(model.outputs) == 2:
        label_name, probability_name = model.output_names
        labels = outputs[label_name].tolist()
        classes = [str(name) for name in model.classes]
        # numpy float32 scalars, not Python floats: orjson prints them at float32 precision (0.9, not 0.8999999761).
        predictions: list[Any] = [
            {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
            for label, row in zip(labels, outputs[probability_name], strict=True)
        ]
    else:
        values = outputs[model.output_names[0]]
        single = values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)
        predictions = list(values.reshape(len(values))) if single else list(values)
    return predictions
