"""A converted graph without the round trips skl2onnx leaves in it, so a one-row run executes fewer nodes.

skl2onnx converts each step on its own, so a pipeline's graph gathers its columns into one tensor and
reads them back one at a time (a ColumnTransformer's string columns: Concat, then an ArrayFeatureExtractor
per column; its imputer: Concat, then a Gather per column), and computes constants at run time (the
string imputer's fill value: a LabelEncoder of the constant 0). onnxruntime's own optimiser keeps all of
them: it folds no ai.onnx.ml node and knows no ArrayFeatureExtractor. Each node costs a one-row run a
fixed few microseconds whatever its size, so on the penguins example (24 nodes) dropping these 8 made a
one-row run 0.82x the time, in process (docs/benchmarks.md, "One request at low concurrency").

Every rewrite gives the same tensors, bit for bit: a read of column j of a Concat of one-column tensors
is tensor j, and a folded constant is what onnxruntime computed for it. The parity gate then checks the
lean graph like any other (export/fidelity.py), so a rewrite that changed an answer could not publish.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

SUBGRAPHS = {onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS}
RANDOM = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
"""Ops whose constant inputs do not make a constant: folding would freeze one sample."""
COLUMN_READS = {"ArrayFeatureExtractor": None, "Gather": 1}
"""Ops that read columns of a 2-D tensor by index, and the axis attribute that makes them do so (None:
the op has no axis and always reads the last one)."""


@dataclass(frozen=True)
class Leaned:
    model: onnx.ModelProto
    nodes_before: int
    nodes_after: int


def lean(model: onnx.ModelProto) -> Leaned:
    """The model with constant nodes folded, column round trips bypassed and dead nodes dropped (in place).

    A graph with subgraphs (If, Loop, Scan) is left as it is: their bodies may read any outer name, which
    these rewrites do not follow."""
    before = len(model.graph.node)
    if any(attribute.type in SUBGRAPHS for node in model.graph.node for attribute in node.attribute):
        return Leaned(model, before, before)
    _fold_constants(model)
    # Again after each round: a bypassed read can give shape inference the width it lacked downstream
    # (a Where of an ArrayFeatureExtractor's output, whose shape onnx does not infer, becomes a Where of an input).
    while _bypass_column_reads(model):
        _drop_dead(model)
    _drop_dead(model)
    return Leaned(model, before, len(model.graph.node))


def _fold_constants(model: onnx.ModelProto) -> None:
    """Nodes whose every input is an initializer become initializers, computed once by onnxruntime."""
    import onnxruntime as ort

    graph = model.graph
    # An initializer that is also a graph input is a default the caller may override: not a constant.
    overridable = {value.name for value in graph.input}
    initializers = {tensor.name: tensor for tensor in graph.initializer if tensor.name not in overridable}
    graph_outputs = {value.name for value in graph.output}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if (
            not inputs
            or node.op_type in RANDOM
            or not all(name in initializers for name in inputs)
            or graph_outputs.intersection(node.output)
            or not all(node.output)
        ):
            kept.append(node)
            continue
        folded = helper.make_graph(
            [node], "fold", [], [helper.make_empty_tensor_value_info(name) for name in node.output],
            initializer=[initializers[name] for name in inputs],
        )  # fmt: skip
        alone = helper.make_model(folded, opset_imports=model.opset_import, ir_version=model.ir_version)
        session = ort.InferenceSession(alone.SerializeToString(), providers=["CPUExecutionProvider"])
        values = session.run(None, {})
        if not all(isinstance(value, np.ndarray) for value in values):  # a sequence or a map: no initializer
            kept.append(node)
            continue
        for name, value in zip(node.output, values, strict=True):
            tensor = numpy_helper.from_array(value, name)
            graph.initializer.append(tensor)
            initializers[name] = tensor
    del graph.node[:]
    graph.node.extend(kept)


def _bypass_column_reads(model: onnx.ModelProto) -> bool:
    """A read of column j of Concat(x_0, ..., x_k) on axis 1, every x one column wide, is x_j: its
    readers take x_j instead, and the Concat dies if nothing else reads it. Whether any read was bypassed."""
    graph = model.graph
    widths = dict(_column_widths(model))
    overridable = {value.name for value in graph.input}
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer
                 if tensor.name not in overridable}  # fmt: skip
    made_by = {output: node for node in graph.node for output in node.output}
    graph_outputs = {value.name for value in graph.output}
    replaced: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in COLUMN_READS or node.output[0] in graph_outputs:
            continue
        axis = COLUMN_READS[node.op_type]
        if axis is not None and _attribute(node, "axis", 0) not in (axis, -1):
            continue
        index = constants.get(node.input[1])
        concat = made_by.get(node.input[0])
        if (
            index is None
            or index.shape != (1,)
            or index.dtype.kind not in "iu"
            or concat is None
            or concat.op_type != "Concat"
            or _attribute(concat, "axis", 0) not in (1, -1)
            or widths.get(node.input[0]) != len(concat.input)
            or any(widths.get(name) != 1 for name in concat.input)
            or not 0 <= int(index[0]) < len(concat.input)
        ):
            continue
        replaced[node.output[0]] = concat.input[int(index[0])]
    for node in graph.node:
        for position, name in enumerate(node.input):
            while name in replaced:
                name = replaced[name]
            node.input[position] = name
    return bool(replaced)


def _drop_dead(model: onnx.ModelProto) -> None:
    """Nodes none of whose outputs is read (by a node or as a graph output), then unread initializers and
    the shapes recorded for tensors no node makes any more."""
    graph = model.graph
    while True:
        read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
        dead = [node for node in graph.node if not any(name in read for name in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    # An initializer may itself be a graph output, or a graph input's default: both stay.
    read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    read |= {value.name for value in graph.input}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in read]:
        graph.initializer.remove(tensor)
    made = {name for node in graph.node for name in node.output}
    for value in [value for value in graph.value_info if value.name not in made]:
        graph.value_info.remove(value)


def _column_widths(model: onnx.ModelProto) -> Iterator[tuple[str, int]]:
    """Every 2-D tensor whose second dimension onnx's shape inference knows: name -> that width."""
    inferred = shape_inference.infer_shapes(model).graph
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and len(tensor.shape.dim) == 2 and tensor.shape.dim[1].HasField("dim_value"):
            yield value.name, tensor.shape.dim[1].dim_value


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == name), default)
