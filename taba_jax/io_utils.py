"""File writes a reader can trust: whole files replaced atomically, JSON lines appended whole.

Files get the permissions the process umask gives a new file (0644 under the usual 022), like a
plain `open(path, "w")`, although they are written through a private temp file first.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Opens a temp file beside `path`; renames it onto `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Appends `record` as one JSON line with a single write, then flushes and fsyncs.

    A writer killed mid-write can leave at most a torn last line, which `read_jsonl` ignores and
    `repair_jsonl` cuts off before the next append.
    """
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _complete_prefix(data: bytes) -> int:
    """Length of the longest prefix of `data` made of whole lines (the last one newline-terminated)."""
    return data.rfind(b"\n") + 1


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file ([] if it does not exist); a torn last line is ignored."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(line) for line in data[:_complete_prefix(data)].splitlines() if line.strip()]


def repair_jsonl(path: str | os.PathLike) -> bool:
    """Cuts a torn last line (left by a killed writer) off `path`; True if there was one."""
    if not os.path.exists(path):
        return False
    with open(path, "rb") as f:
        data = f.read()
    keep = _complete_prefix(data)
    if keep == len(data):
        return False
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True
