import os
import stat

import pytest

from taba_jax import io_utils


def test_append_writes_whole_lines_and_readers_skip_a_torn_last_one(tmp_path):
    path = tmp_path / "results.jsonl"
    io_utils.append_jsonl(path, {"a": 1})
    io_utils.append_jsonl(path, {"b": 2})
    with open(path, "a") as f:
        f.write('{"c": ')  # a writer killed mid-line
    assert io_utils.read_jsonl(path) == [{"a": 1}, {"b": 2}]
    assert io_utils.repair_jsonl(path) is True and io_utils.repair_jsonl(path) is False
    io_utils.append_jsonl(path, {"d": 4})
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n{"d": 4}\n'
    assert io_utils.read_jsonl(tmp_path / "missing.jsonl") == []


def test_atomic_write_leaves_the_old_file_when_it_fails(tmp_path):
    path = tmp_path / "results.json"
    io_utils.write_json(path, {"old": True})
    with pytest.raises(RuntimeError):
        with io_utils.atomic_open(path, "w") as f:
            f.write("{partial")
            raise RuntimeError("killed")
    assert path.read_text().startswith('{\n  "old": true') and os.listdir(tmp_path) == ["results.json"]


def test_files_get_the_permissions_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io_utils.write_json(tmp_path / "a.json", {})
        io_utils.append_jsonl(tmp_path / "b.jsonl", {})
        with open(tmp_path / "c.txt", "w") as f:
            f.write("plain open")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.json": 0o644, "b.jsonl": 0o644, "c.txt": 0o644}
