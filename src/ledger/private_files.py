"""Files readable by their owner only (mode 0600): key material, tokens, audit bundles and
state, exports. Nothing here is ever created with a wider mode, even for a moment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_secret(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only (0600), refusing to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def replace_private(path: Path, data: bytes) -> None:
    """Replace `path` by a file of `data` readable by its owner only (0600), whatever the
    mode of the file it replaces: a new file beside it (created 0600), flushed to disk, then
    renamed over it, so a reader finds the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
