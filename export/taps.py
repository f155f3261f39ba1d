"""Taps: tensors a published graph already computes from a categorical input, named in the card for servers.

Counting a categorical input against its training categories means matching every value a caller sends,
and in Python that is a hash of a new string per value: most of what input monitoring cost a 100-row
request (docs/benchmarks.md). The graph matches each value anyway, in its one-hot encoder, and flags the
missing ones, in its imputer. A server that adds those two tensors to its session's outputs (the file is
unchanged) reads both counts off them with a few numpy calls per batch.

The pattern is skl2onnx's conversion of SimpleImputer then OneHotEncoder(handle_unknown="ignore") on a
string column, as every pipeline this exporter trains has it:

    Where(was_missing, fill, column) -> OneHotEncoder(cats_strings, zeros=1)

A column without it gets no tap and is counted from its values, as before. The server checks each tap
against that reference counting before it trusts it (serve/taps.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import onnx

from contract import CategoryTap

ONNX_DOMAINS = ("", "ai.onnx")


def find_taps(model: onnx.ModelProto, categorical: Iterable[str]) -> dict[str, CategoryTap]:
    """Input name -> its tap, for each of the `categorical` inputs the graph encodes by the pattern above."""
    graph = model.graph
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    # A graph output already leaves the session; naming it again as an output would be refused.
    published = {value.name for value in graph.output}
    taps: dict[str, CategoryTap] = {}
    for column in categorical:
        for where in readers[column]:
            if where.op_type != "Where" or where.domain not in ONNX_DOMAINS or list(where.input[2:]) != [column]:
                continue
            for encoder in readers[where.output[0]]:
                attributes = {
                    attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in encoder.attribute
                }
                if (
                    encoder.op_type == "OneHotEncoder"
                    and encoder.domain == "ai.onnx.ml"
                    and attributes.get("zeros", 1) == 1  # an unknown value is all zeros, not an error
                    and attributes.get("cats_strings")
                    and not {encoder.output[0], where.input[0]} & published
                ):
                    categories = [value.decode() for value in attributes["cats_strings"]]
                    taps[column] = CategoryTap(one_hot=encoder.output[0], categories=categories, missing=where.input[0])
                    break
            if column in taps:
                break
    return taps
