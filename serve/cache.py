"""An optional response cache: LRU, keyed by model version and the request's canonical input bytes.

The key holds the model's name, version and sha256, so a new version (or a re-published file) can
never be answered from an older one's entries. Bounded twice: entries, and rows per cached request.
"""

from __future__ import annotations

import collections
import struct
from typing import Any

import numpy as np

from serve.columns import Inputs, Outputs, Signature, column_array

MAX_CACHED_ROWS = 64


def canonical_key(identity: tuple[str, int, str], signature: Signature, feed: Inputs) -> bytes:
    """Name, version, sha256, then every input in name order: name, dtype, shape, values.

    List columns are converted as their batch would convert them, so JSON and binary requests for the
    same rows share an entry.
    """
    parts = [repr(identity).encode()]
    for name, dtype, _ in sorted(signature):
        array = column_array(feed[name], dtype)
        parts.append(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        if array.dtype == object:
            parts.extend(struct.pack("<I", len(raw)) + raw for raw in (str(item).encode() for item in array.ravel()))
        else:
            parts.append(np.ascontiguousarray(array).tobytes())
    return b"".join(parts)


class ResponseCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[bytes, Outputs] = collections.OrderedDict()

    def get(self, key: bytes) -> Outputs | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: bytes, outputs: Outputs, rows: int) -> None:
        if rows > MAX_CACHED_ROWS:
            return
        frozen: dict[str, Any] = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)  # a view would pin the whole batch's arrays in memory
            copy.flags.writeable = False
            frozen[name] = copy
        self._entries[key] = Outputs(frozen, batch_rows=0)  # a hit runs in no batch
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
