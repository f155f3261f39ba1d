"""Open Inference Protocol datatypes as numpy dtypes, and their onnxruntime and Triton-config names.

The names come from the repository contract's one table (contract.DATATYPES); this adds numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from contract import DATATYPES

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {datatype.v2: np.dtype(datatype.numpy) for datatype in DATATYPES}
ORT_TO_V2: dict[str, str] = {datatype.onnxruntime: datatype.v2 for datatype in DATATYPES}
V2_TO_TRITON_CONFIG: dict[str, str] = {datatype.v2: datatype.triton_config for datatype in DATATYPES}
