"""Atomic file replacement: write to a temporary file in the target's folder, then os.replace.

A crash or exception mid-write leaves the previous good file untouched and removes the temporary file,
so readers never see a half-written table. Every writer of the package goes through this module.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


@contextmanager
def atomic_open(target: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file handle whose content replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; store files are ordinary data
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_with(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` for writers that need a path (polars, pyarrow), then move `tmp` onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    """Replace `target` with `data` atomically."""
    with atomic_open(target) as handle:
        handle.write(data)
    return Path(target)


def atomic_write_text(target: Path, text: str) -> Path:
    """Replace `target` with UTF-8 `text` atomically."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, obj: object) -> Path:
    """Write `obj` as indented, key-sorted JSON to `target` atomically."""
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")
