"""Writers that stream the demo store to disk without holding its objects in memory.

A benchmark-sized store has hundreds of thousands of charges, several hundred megabytes of
JSON. Each object is serialised the moment it is built and appended to a scratch file; only a
small index (created, sequence, offset, length) stays in memory. Closing the writer orders
that index newest first, the order Stripe's list endpoints return, and copies the bytes into
the final JSON array.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Sorted keys and compact separators make the output byte-identical whatever order a builder
# happened to insert keys in.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def dumps(obj: Any) -> str:
    """The canonical compact JSON text of `obj`, as every object of the store is written."""
    return _ENCODE(obj)


class JsonArrayWriter:
    """One JSON array file, one object per line, written newest first by `created`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scratch_path = path.with_name(path.name + ".scratch")
        self._scratch = open(self._scratch_path, "wb")  # noqa: SIM115 - closed in close()
        self._index: list[tuple[int, int, int, int]] = []
        self._offset = 0

    def __len__(self) -> int:
        return len(self._index)

    def add(self, obj: dict[str, Any], created: int) -> None:
        """Append `obj`, to be placed in the file by `created` (unix seconds)."""
        data = _ENCODE(obj).encode()
        self._index.append((created, len(self._index), self._offset, len(data)))
        self._scratch.write(data)
        self._offset += len(data)

    def close(self) -> int:
        """Write the final array, drop the scratch file and return how many objects it holds."""
        self._scratch.close()
        # Ties on `created` keep the later-added object first, so the order never depends on
        # anything but the generation sequence.
        self._index.sort(reverse=True)
        with open(self.path, "wb") as out:
            if not self._index:
                out.write(b"[]\n")
            else:
                # Positional reads, not a memory map: the scratch file can be larger than the
                # memory this process should claim.
                with open(self._scratch_path, "rb") as scratch:
                    descriptor = scratch.fileno()
                    out.write(b"[\n")
                    last = len(self._index) - 1
                    for position, (_, _, offset, length) in enumerate(self._index):
                        out.write(os.pread(descriptor, length, offset))
                        out.write(b"\n" if position == last else b",\n")
                    out.write(b"]\n")
        os.remove(self._scratch_path)
        return len(self._index)
