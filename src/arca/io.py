"""Atomic file and folder writes, JSONL helpers, progress bars and logging set-up.

Every output a Snakemake rule declares is written under a temporary name in the same folder and
renamed into place when complete, so a killed job never leaves a half-written file that looks
finished; the temporaries a killed writer leaves beside it go at the next write of that path.
Progress files that grow while a job runs (``JsonlAppender``: a training run's
``live/metrics.jsonl``) are never declared outputs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from arca.config import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``path`` (file or folder).

    On an exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    _remove(tmp)
    _remove_stale(path)
    try:
        yield tmp
        _fsync_tree(tmp)  # the bytes reach the disk before the name does: a crash leaves old or new
        if path.is_dir() and tmp.is_dir():
            old = path.parent / f".{path.name}.old{os.getpid()}"
            path.rename(old)
            tmp.rename(path)
            _remove(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        _remove(tmp)


def _remove_stale(path: Path) -> None:
    """Remove what writers of ``path`` killed mid-write left beside it: ``.<name>.tmp<pid>`` and
    ``.<name>.old<pid>`` of processes no longer alive on this host (one writer per path at a time is
    the rule Snakemake's DAG and the run-folder lock keep, so these are never another's live work)."""
    prefix = f".{path.name}."
    for p in path.parent.glob(glob.escape(prefix) + "*"):
        m = re.fullmatch(r"(?:tmp|old)(\d+)", p.name[len(prefix) :])
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _remove(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # gone, or a number no process id reaches
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fsync_tree(p: Path) -> None:
    """fsync a file, or every file and folder under a folder."""
    if p.is_symlink() or not p.exists():
        return
    if p.is_dir():
        for child in p.iterdir():
            _fsync_tree(child)
        _fsync_dir(p)
        return
    with open(p, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(p: Path) -> None:
    """fsync a folder so a rename inside it survives a crash (not every file system allows it)."""
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextlib.contextmanager
def folder_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (the OS drops it if the process dies), or raise
    ``InputError`` at once when another process holds it; the file goes when the block ends."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the holder may have removed the file between our open and our lock: that lock guards nothing
            if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise BlockingIOError
        except BlockingIOError:
            raise InputError(f"{what} is being written by another process (lock {path}); wait for it") from None
        yield
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a malformed line raises ValueError naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i}: malformed JSON line: {e.msg}") from None
    return rows


class JsonlAppender:
    """A JSONL file that grows by one flushed line at a time, so ``tail -f`` follows a running job.

    Opening it first rewrites the file (atomically) with ``rows``, the lines a resumed run already
    has from its checkpoint: lines a killed run wrote after that checkpoint are dropped, so the
    file again equals what an uninterrupted run has at this point. Use as a context manager.
    """

    def __init__(self, path: str | Path, rows: Iterable[dict] = ()):
        self.path = Path(path)
        write_jsonl(self.path, rows)  # creates the folder
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str = "it", initial: int = 0):
    """A tqdm bar with rate and ETA on stderr (which every Snakemake rule sends to its log).

    In a log file (stderr not a terminal) it redraws at most every 30 s instead of 10 times a
    second, so ``tail -f results/<name>/logs/<rule>/<job>.log`` shows it without flooding the file.
    """
    import sys

    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=tty,
        mininterval=0.5 if tty else 30.0,
        ascii=not tty,
    )


def setup_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with ``-v``) for this package's ``arca.*`` loggers, WARNING for everything else.

    Third-party libraries log at INFO what only their developers need (matplotlib's font
    subsetting alone wrote hundreds of lines per figures job); their warnings still show.
    """
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger().setLevel(logging.WARNING)  # also when a handler was already installed
    logging.getLogger("arca").setLevel(logging.DEBUG if verbose else logging.INFO)
