"""Tests of arca.io: atomic file and folder writes, JSONL reading and appending, the progress bar.

The atomic writes are checked where they matter: after a failure inside the block the old file
or folder is still there unchanged and no temporary is left beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from arca import io


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_write_text_creates_folders_and_replaces_a_file(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    io.write_text(path, "one")
    io.write_text(path, "two")
    assert path.read_text() == "two" and _siblings(path) == ["out.txt"]


def test_failure_inside_atomic_path_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    io.write_json(path, {"old": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with io.atomic_path(path) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"old": 1} and _siblings(path) == ["summary.json"]


def test_atomic_path_replaces_a_whole_folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "stale.bin").write_text("old")
    with io.atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("new")
        assert (folder / "stale.bin").exists()  # the old folder stays until the new one is complete
    assert sorted(p.name for p in folder.iterdir()) == ["weights.bin"]
    assert _siblings(folder) == ["adapter"]  # neither the temporary nor the old folder is left


def test_failed_folder_write_leaves_nothing(tmp_path):
    folder = tmp_path / "base"
    with pytest.raises(ValueError):
        with io.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text("{}")
            raise ValueError("bad config")
    assert list(tmp_path.iterdir()) == []


def test_a_write_removes_the_temporaries_of_killed_writers_of_that_path_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(dead.stdout), os.getppid()
    (tmp_path / f".test.jsonl.tmp{dead_pid}").write_text('{"half": ')  # a file write killed before its rename
    (tmp_path / f".base.old{dead_pid}").mkdir()  # a folder write killed between its two renames
    (tmp_path / f".base.tmp{dead_pid}").mkdir()
    (tmp_path / f".base.tmp{dead_pid}" / "model.safetensors").write_text("weights")
    kept = [f".test.jsonl.tmp{live_pid}", f".train.jsonl.tmp{dead_pid}", ".test.jsonl.tmpx", "notes.test.jsonl.tmp1"]
    for name in kept:  # a live writer's, another path's, and names this module never makes
        (tmp_path / name).write_text("")
    io.write_jsonl(tmp_path / "test.jsonl", [{"a": 1}])
    with io.atomic_path(tmp_path / "base") as tmp:
        tmp.mkdir()
    assert _siblings(tmp_path / "x") == sorted(["base", "test.jsonl", *kept])


def test_json_and_jsonl_round_trip(tmp_path):
    io.write_json(tmp_path / "x.json", {"b": 1, "a": [1.5, None]})
    text = (tmp_path / "x.json").read_text()
    assert text.endswith("}\n") and text.index('"b"') < text.index('"a"')  # keys keep their order
    rows = [{"step": 0, "loss": 2.5}, {"step": 1, "loss": None}]
    io.write_jsonl(tmp_path / "m.jsonl", rows)
    assert (tmp_path / "m.jsonl").read_text().count("\n") == 2
    assert io.read_jsonl(tmp_path / "m.jsonl") == rows


def test_read_jsonl_skips_blank_lines_and_names_a_malformed_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert io.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"samples\.jsonl:3: malformed JSON line"):
        io.read_jsonl(path)


def test_jsonl_appender_restarts_from_the_checkpoint_rows_and_flushes_each_line(tmp_path):
    path = tmp_path / "live" / "metrics.jsonl"
    io.write_jsonl(path, [{"step": s} for s in range(5)])  # a killed run got to step 4
    with io.JsonlAppender(path, [{"step": 0}, {"step": 1}]) as out:  # its checkpoint holds steps 0-1
        assert io.read_jsonl(path) == [{"step": 0}, {"step": 1}]
        out.append({"step": 2})
        assert io.read_jsonl(path)[-1] == {"step": 2}  # readable while the file is still open
    assert [r["step"] for r in io.read_jsonl(path)] == [0, 1, 2]


def test_progress_bar_in_a_log_file_redraws_rarely_in_ascii(capsys):
    bar = io.progress_bar(total=4, desc="train", unit="step", initial=1)
    bar.update(3)
    bar.close()
    assert bar.mininterval == 30.0 and bar.ascii  # stderr is captured here, not a terminal
    assert bar.n == 4 and "train" in capsys.readouterr().err


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = io.os.fsync, io.os.replace
    monkeypatch.setattr(io.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    io.write_text(tmp_path / "a.txt", "hello")
    assert events[:2] == ["fsync", "replace"]
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_folder_lock_refuses_a_second_holder_and_is_gone_after(tmp_path):
    lock = tmp_path / "run" / ".train.lock"
    with io.folder_lock(lock, "run folder x"):
        with pytest.raises(ValueError, match="run folder x is being written by another process"):
            with io.folder_lock(lock, "run folder x"):
                pass
    assert not lock.exists()
    with io.folder_lock(lock, "run folder x"):  # free again
        pass
