"""One exclusive lock shared by every process on this machine, held through a lock file.

Several writers here are separate processes (partition runs, the apply run, the command line),
so in-process locks would not serialise them; `flock` on a file under TRACE_HOME does, and the
kernel releases it if the holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
