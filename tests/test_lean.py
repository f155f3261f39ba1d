"""The lean graph gives skl2onnx's answers bit for bit, with fewer nodes, and leaves alone what it cannot prove."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn

from export.convert import TARGET_OPSET, TARGET_OPSET_ML, initial_types
from export.features import prepare_frame
from export.lean import lean
from export.training import train
from loadtest.synthetic import mixed_table


def outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[Any]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def feed_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The exporter's layout: a [n, 1] column per input, '' for a missing string."""
    feed = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            feed[name] = np.array([value if isinstance(value, str) else "" for value in column], dtype=object)
        else:
            feed[name] = column.to_numpy(np.float32)
        feed[name] = feed[name].reshape(-1, 1)
    return feed


def test_a_column_transformer_graph_loses_its_round_trips_and_keeps_every_answer() -> None:
    frame, labels = mixed_table("multiclass", rows=300)
    frame = prepare_frame(frame)
    pipeline = train(frame, labels, "logistic", "classification", folds=2).pipeline
    raw = convert_sklearn(
        pipeline, initial_types=initial_types(frame), target_opset={"": TARGET_OPSET, "ai.onnx.ml": TARGET_OPSET_ML},
        options={id(pipeline): {"zipmap": False}},
    )  # fmt: skip
    leaned = lean(onnx.ModelProto.FromString(raw.SerializeToString()))

    assert leaned.nodes_after < leaned.nodes_before == len(raw.graph.node)
    made_by = {output: node.op_type for node in leaned.model.graph.node for output in node.output}
    constants = {tensor.name for tensor in leaned.model.graph.initializer}
    for node in leaned.model.graph.node:
        if node.op_type in ("ArrayFeatureExtractor", "Gather"):
            assert made_by.get(node.input[0]) != "Concat", f"{node.name} still reads a Concat back"
        assert not all(name in constants for name in node.input if name), f"{node.name} is still a constant"
    rows = frame.copy()
    strings = [name for name in rows.columns if rows[name].dtype == object]
    rows.loc[rows.index[:5], strings[0]] = "never seen in training"  # an unseen category
    rows.loc[rows.index[5:10], strings[0]] = None  # a missing one
    feed = feed_of(rows)
    for before, after in zip(outputs(raw, feed), outputs(leaned.model, feed), strict=True):
        assert before.dtype == after.dtype and before.shape == after.shape
        assert np.array_equal(before, after), "the lean graph changed an answer"


def column_graph(first_width: int) -> onnx.ModelProto:
    """Concat(a [n, first_width], b [n, 1]) read back at column 1 by a Gather and an ArrayFeatureExtractor."""
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, first_width]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1]),
    ]
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("Gather", ["ab", "one"], ["gathered"], axis=1),
        helper.make_node("ArrayFeatureExtractor", ["ab", "one"], ["extracted"], domain="ai.onnx.ml"),
        helper.make_node("Add", ["gathered", "extracted"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "columns", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "one")],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", TARGET_OPSET), helper.make_opsetid("ai.onnx.ml", TARGET_OPSET_ML)]
    return helper.make_model(graph, opset_imports=opsets)


def test_a_read_of_one_column_inputs_becomes_the_input_and_a_wider_input_is_left_alone() -> None:
    narrow = lean(column_graph(first_width=1))
    assert [node.op_type for node in narrow.model.graph.node] == ["Add"]
    assert list(narrow.model.graph.node[0].input) == ["b", "b"]

    # Three columns, read at 0 by a Gather and at 2 by an ArrayFeatureExtractor: each read is its own input.
    three = column_graph(first_width=1)
    three.graph.input.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, 1]))
    three.graph.node[0].input.append("c")
    three.graph.initializer.extend([numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
                                    numpy_helper.from_array(np.array([2], dtype=np.int64), "two")])  # fmt: skip
    three.graph.node[1].input[1], three.graph.node[2].input[1] = "zero", "two"
    feed = {name: np.array([[value]], np.float32) for name, value in (("a", 1.0), ("b", 10.0), ("c", 100.0))}
    expected = outputs(three, feed)
    leaned = lean(three)
    assert list(leaned.model.graph.node[0].input) == ["a", "c"]
    assert expected[0].tolist() == [[101.0]]  # a (1) + c (100): column 0 and column 2
    assert np.array_equal(outputs(leaned.model, feed)[0], expected[0])

    # With `a` two columns wide, column 1 of the Concat is a's second column, not b.
    wide = column_graph(first_width=2)
    untouched = lean(onnx.ModelProto.FromString(wide.SerializeToString()))
    assert untouched.nodes_after == untouched.nodes_before == 4
    feed = {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([[3.0]], np.float32)}
    assert outputs(untouched.model, feed)[0].tolist() == [[4.0]]  # 2 + 2: a's second column, twice


def test_a_graph_with_a_subgraph_is_not_touched() -> None:
    model = column_graph(first_width=1)
    branch = helper.make_graph([helper.make_node("Identity", ["b"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])])  # fmt: skip
    model.graph.node.append(helper.make_node("If", ["flag"], ["unused"], then_branch=branch, else_branch=branch))
    leaned = lean(model)
    assert leaned.nodes_after == leaned.nodes_before == 5
