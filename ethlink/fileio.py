"""Writing output files so that a failure (a full disk, a read-only directory, an
interrupt) never leaves a half-written file under the final name: each file is written
beside its destination under a temporary name and renamed when whole (rename is atomic
within a directory, POSIX rename(2)); on any failure the temporary file is removed.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed to `path` when the
    block ends, removed when it raises. The parent directory must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes it 0600; an output is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
