"""Both parsing paths over one table: every bad case is refused by the plain path and named by the checked one,
and every good case gives the same arrays from both."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.binary import decode_tensor
from serve.columns import assemble
from serve.errors import InvalidRequestError
from serve.feeds import checked_feed, plain_feed
from serve.model import Model, SessionOptions
from serve.protocol import parse_infer_request


@pytest.fixture(scope="module")
def models(model_dir: Path) -> dict[str, Model]:
    return {name: Model(name, 1, model_dir / name / "1", SessionOptions()) for name in ("age-weight", "penguins")}


def age(values: list[Any], **changes: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "age", "datatype": "FP32", "shape": [len(values), 1], "data": values, **changes}]}


def age_binary(raw: bytes, rows: int = 1) -> tuple[dict[str, Any], bytes]:
    tensor = {"name": "age", "datatype": "FP32", "shape": [rows, 1], "parameters": {"binary_data_size": len(raw)}}
    return {"inputs": [tensor]}, raw


PENGUIN = {"island": "Dream", "bill_length_mm": 45.1, "bill_depth_mm": 17.0, "flipper_length_mm": 200.0,
           "body_mass_g": 3800.0, "sex": "female"}  # fmt: skip


def penguin(**data: list[Any]) -> dict[str, Any]:
    inputs = []
    for name, value in PENGUIN.items():
        values = data.get(name, [value])
        datatype = "BYTES" if isinstance(value, str) else "FP32"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(values), 1], "data": values})
    return {"inputs": inputs}


# (model, document, binary tail, the checked path's error); every one is also refused by the plain path.
BAD = [
    pytest.param("age-weight", age(["thirty"]), b"", "input 'age' is FP32: expected numbers, got 'thirty'", id="string"),
    pytest.param("age-weight", age([True]), b"", "input 'age' is FP32: expected numbers, got True", id="boolean"),
    pytest.param("age-weight", age([1e39]), b"", "input 'age' is FP32: 1e+39 is beyond its range", id="beyond-fp32"),
    pytest.param("age-weight", age([None]), b"", "input 'age' contains NaN (a missing value), but model 'age-weight' has no imputer", id="null-not-imputed"),
    pytest.param("age-weight", age([1.0], datatype="FP64"), b"", "input 'age': datatype 'FP64' does not match", id="datatype"),
    pytest.param("age-weight", age([1.0], shape=[1, True]), b"", "input 'age': shape must be a list of integers, got [1, True]", id="boolean-dimension"),
    pytest.param("age-weight", age([1.0, 2.0], shape=[1, 1]), b"", "input 'age' has 2 values; its shape needs 1", id="count"),
    pytest.param("age-weight", *age_binary(struct.pack("<f", math.inf)), "input 'age' contains an infinite value", id="binary-infinity"),
    pytest.param("age-weight", *age_binary(struct.pack("<f", math.nan)), "input 'age' contains NaN", id="binary-nan-not-imputed"),
    pytest.param("age-weight", *age_binary(struct.pack("<100f", *[math.inf] * 100), 100), "input 'age' contains an infinite value", id="binary-array-infinity"),
    pytest.param("age-weight", *age_binary(b"\x00\x00\x80"), "input 'age': binary_data_size is 3 bytes, but 1 FP32 values take 4", id="binary-size"),
    pytest.param("penguins", penguin(body_mass_g=[math.inf]), b"", "input 'body_mass_g' contains an infinite value", id="imputed-infinity"),
    pytest.param("penguins", penguin(sex=[7]), b"", "input 'sex' is BYTES: expected strings, got 7", id="number-for-string"),
    pytest.param("penguins", penguin(sex=[None]), b"", "input 'sex' is BYTES: expected strings, got None", id="null-string"),
    pytest.param("penguins", penguin(sex=["female", "male"]), b"", "input 'sex' has 2 rows but earlier inputs have 1", id="rows-disagree"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "document", "tail", "message"), BAD)
def test_every_bad_case_is_refused_by_the_plain_path_and_named_by_the_checked_one(
    models: dict[str, Model], name: str, document: dict[str, Any], tail: bytes, message: str
) -> None:
    model = models[name]
    assert plain_feed(document, model, tail) is None
    with pytest.raises(InvalidRequestError) as checked:
        checked_feed(document, model, tail)
    assert checked.value.message.startswith(message), checked.value.message
    with pytest.raises(InvalidRequestError) as public:
        parse_infer_request(document, model, tail, max_rows=100)
    assert public.value.message == checked.value.message


GOOD = [
    pytest.param("age-weight", age([35.0, 20]), b"", id="float-and-integer"),
    pytest.param("age-weight", *age_binary(struct.pack("<2f", 35.0, 1e-3), 2), id="binary"),
    pytest.param("age-weight", *age_binary(struct.pack("<100f", *range(100)), 100), id="binary-array"),
    pytest.param("penguins", penguin(body_mass_g=[None], sex=[""]), b"", id="missing-where-imputed"),
    pytest.param("penguins", penguin(island=["Atlantis"]), b"", id="unseen-category"),
]


@pytest.mark.parametrize(("name", "document", "tail"), GOOD)
def test_plain_and_checked_paths_give_the_same_arrays(
    models: dict[str, Model], name: str, document: dict[str, Any], tail: bytes
) -> None:
    model = models[name]
    plain = plain_feed(document, model, tail)
    assert plain is not None, "a plain request must take the plain path"
    checked, rows = checked_feed(document, model, tail)
    assert plain[1] == rows
    assembled = assemble([plain[0]], model.signature)
    for input_name, array in checked.items():
        got = assembled[input_name]
        assert got.dtype == array.dtype and got.shape == array.shape, input_name
        if array.dtype.kind == "f":
            np.testing.assert_array_equal(got, array)  # NaN equals NaN here
        else:
            assert got.tolist() == array.tolist()


def by_the_book(chunk: bytes, count: int) -> list[str] | None:
    """Triton's BYTES layout read the slow, obvious way: a 4-byte little-endian length, then UTF-8 bytes."""
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(chunk):
            return None
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            return None
        try:
            values.append(chunk[offset : offset + length].decode())
        except UnicodeDecodeError:
            return None
        offset += length
    return values if offset == len(chunk) else None


def laid_out(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(raw)) + raw for raw in (value.encode() for value in values))


# One 261-byte ASCII element that a walk reading only each prefix's low byte would take for eight, ending
# exactly on the end: "aaaaa", then seven prefixes (length, 0, 0, 0) and their strings inside it.
FAKE = [bytes([length, 0, 0, 0]) + b"a" * length for length in [32] * 6 + [36]]
MISREAD = struct.pack("<I", 261) + b"a" * 5 + b"".join(FAKE)
CATEGORIES = ["Dream", "Biscoe", "Torgersen"] * 3  # nine: past the count from which the short walk is taken


@pytest.mark.parametrize(
    ("chunk", "count"),
    [
        pytest.param(laid_out(*CATEGORIES), 9, id="short-ascii"),
        pytest.param(laid_out("Dream"), 1, id="one"),
        pytest.param(laid_out("", "a", "", "", *CATEGORIES), 13, id="empty-strings"),
        pytest.param(laid_out("a\0\0\0b", "\0", "\0\0\0", *CATEGORIES), 12, id="nuls-inside"),
        pytest.param(laid_out("x" * 255, "x" * 256, "y" * 300, *CATEGORIES), 12, id="lengths-past-one-byte"),
        pytest.param(laid_out("Dréam", *CATEGORIES), 10, id="non-ascii"),
        pytest.param(MISREAD, 8, id="low-bytes-misread-as-eight"),
        pytest.param(MISREAD, 1, id="one-long-element"),
        pytest.param(laid_out(*CATEGORIES), 10, id="too-few"),
        pytest.param(laid_out(*CATEGORIES), 8, id="too-many"),
        pytest.param(b"\x05\x00", 1, id="truncated-prefix"),
        pytest.param(b"", 0, id="none"),
    ],
)  # fmt: skip
def test_bytes_tensors_decode_as_the_layout_says(chunk: bytes, count: int) -> None:
    expected = by_the_book(chunk, count)
    if expected is None:
        with pytest.raises(InvalidRequestError):
            decode_tensor(chunk, "BYTES", count, "island")
    else:
        assert decode_tensor(chunk, "BYTES", count, "island").tolist() == expected


def test_bytes_decoding_agrees_with_the_layout_on_random_chunks() -> None:
    # Up to 12 laid-out strings (with NULs; ASCII in half the trials; up to 260 long), then a byte changed, cut
    # or added, or the count moved by one.
    generator = np.random.default_rng(21)
    ascii_only, any_text = ["\0", "a", "\x01", "Z"], ["\0", "a", "\x01", "Z", "é"]
    outcomes = {"decoded": 0, "refused": 0}
    for trial in range(3000):
        alphabet = ascii_only if trial % 2 else any_text
        values = [
            "".join(generator.choice(alphabet, int(generator.choice([0, 1, 3, 260]))))
            for _ in range(int(generator.integers(0, 13)))
        ]
        chunk, count = bytearray(laid_out(*values)), len(values)
        change = generator.integers(0, 5)
        if change == 1 and chunk:
            chunk[int(generator.integers(0, len(chunk)))] = int(generator.integers(0, 256))
        elif change == 2 and chunk:
            del chunk[int(generator.integers(0, len(chunk))) :]
        elif change == 3:
            chunk.insert(int(generator.integers(0, len(chunk) + 1)), int(generator.integers(0, 4)))
        elif change == 4:
            count += int(generator.choice([-1, 1]))
        expected = by_the_book(bytes(chunk), max(count, 0))
        try:
            got = decode_tensor(bytes(chunk), "BYTES", max(count, 0), "x").tolist()
        except InvalidRequestError:
            got = None
        assert got == expected, (bytes(chunk), count)
        outcomes["refused" if expected is None else "decoded"] += 1
    assert min(outcomes.values()) > 500, outcomes  # both sides of the comparison were exercised
