r"""Math-Verify in persistent worker processes with a hard wall-clock timeout per item.

Math-Verify (``math_verify.parse`` then ``math_verify.verify(gold, pred)``, gold first) accepts
equivalent forms that the paper's string match rejects (``0.5`` vs ``\frac{1}{2}``, ``3,000`` vs
``3000``), but it runs sympy on model output, which can take unbounded time or memory on
pathological input (``9^{9^{9^{9}}}``). So it never runs in the caller's process: workers are
plain subprocesses; the parent enforces the per-item timeout and kills and replaces a worker that
overruns. An item that times out, crashes its worker or raises scores False. Math-Verify's own
signal-based timeouts are switched off in the worker (they only work in a main thread), so the
parent's clock is the only one that matters. ``arca.grading`` combines this with the string
grader.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Sequence

log = logging.getLogger(__name__)

# Workers are plain subprocesses (``python -c``) speaking JSON lines over stdin/stdout, not
# multiprocessing children: spawn/forkserver re-import the caller's main script in every child
# (fatal for a script without a ``__main__`` guard), and fork would copy a training process's
# threads, CUDA context and address space (an RLIMIT_AS would then be meaningless).
_WORKER_CODE = "import sys; from arca.math_verify_pool import _worker_main; _worker_main(sys.argv[1:])"


def _gold_for_math_verify(gold: str) -> str:
    r"""Math-Verify only extracts LaTeX from math mode or a box, so wrap a bare gold answer.

    ``\boxed{}`` rather than ``$...$`` because MATH answers contain ``\$`` (money).
    """
    if "\\boxed" in gold or "\\fbox" in gold:
        return gold
    return "\\boxed{" + gold.strip() + "}"


def _math_verify_pair(gold: str, completion: str) -> bool:
    from math_verify import parse, verify

    # parsing_timeout / timeout_seconds = None: Math-Verify's SIGALRM timeouts are disabled; the
    # parent process enforces the wall-clock limit instead.
    g = parse(_gold_for_math_verify(gold), parsing_timeout=None)
    p = parse(completion, parsing_timeout=None)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def _worker_main(argv: list[str]) -> None:
    """Worker loop: read ``[gold, completion, backstop_s]`` lines, answer ``["ok"|"error", value]``."""
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C goes to the whole process group; the parent decides what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Math-Verify warns that its timeout is off and logs every parse failure: noise here.
    logging.disable(logging.CRITICAL)
    memory_limit_mb = int(argv[0]) if argv and argv[0] != "0" else 0
    if memory_limit_mb:
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass  # not available here: the wall-clock kill still applies
    # Import and run one easy item before "ready": the first parse builds Math-Verify's LaTeX
    # parser (~0.5 s), which must not be billed to a real item's timeout.
    _math_verify_pair("\\frac{1}{2}", "\\boxed{0.5}")

    def send(obj) -> None:
        proto.write(json.dumps(obj).encode("ascii") + b"\n")

    send(["ready", os.getpid()])
    has_alarm = hasattr(signal, "alarm")
    for line in sys.stdin.buffer:
        try:
            gold, completion, backstop_s = json.loads(line)
        except (ValueError, TypeError) as e:
            send(["error", f"bad request: {e}"])
            continue
        # Backstop for a parent that died without killing us: SIGALRM's default action ends the
        # process even inside a C loop (no Python handler is installed for it).
        if has_alarm:
            signal.alarm(int(backstop_s))
        try:
            reply = ["ok", _math_verify_pair(gold, completion)]
        except BaseException as e:  # noqa: BLE001  (RecursionError, MemoryError, sympy errors)
            reply = ["error", f"{type(e).__name__}: {str(e)[:200]}"]
        if has_alarm:
            signal.alarm(0)
        try:
            send(reply)
        except OSError:
            return  # parent gone


class _Worker:
    """One worker process and the parent's view of it."""

    def __init__(self, memory_limit_mb: int | None, start_timeout: float):
        env = dict(os.environ)
        # The child must import this very package, even when it is not installed.
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, str(int(memory_limit_mb or 0))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.state = "starting"  # starting -> idle <-> busy
        self.item = -1
        self.deadline = time.monotonic() + start_timeout

    def send(self, gold: str, completion: str, backstop_s: int) -> None:
        self.proc.stdin.write(json.dumps([gold, completion, backstop_s]).encode("ascii") + b"\n")
        self.proc.stdin.flush()

    def read_lines(self) -> list | None:
        """Messages that arrived (non-blocking after select); None when the worker has exited."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(x) for x in lines if x.strip()]

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class MathVerifyGrader:
    """Math-Verify in ``workers`` persistent processes with a hard per-item wall-clock timeout.

    Use as a context manager (or call ``close``). ``grade_many`` grades ``(gold, completion)``
    pairs, in order; an item that exceeds ``timeout`` seconds scores False and its worker is
    killed and replaced (the replacement starts in the background while other workers go on).
    ``n_timeouts`` and ``n_errors`` count such items over the grader's life. Start-up (about
    1 s: importing sympy) never counts against an item's timeout.
    """

    def __init__(
        self, workers: int = 1, timeout: float = 5.0, memory_limit_mb: int | None = 4096, start_timeout: float = 120.0
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.n_workers = int(workers)
        self.timeout = float(timeout)
        self.memory_limit_mb = memory_limit_mb
        self.start_timeout = float(start_timeout)
        self.n_timeouts = 0
        self.n_errors = 0
        self._workers: list[_Worker] = []
        # After the first timeout a warm spare is kept, so later timeouts cost no start-up wait.
        self._spare: _Worker | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    # -- lifecycle
    def __enter__(self) -> "MathVerifyGrader":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Launch the workers now (otherwise the first ``grade_many`` does); returns at once."""
        with self._lock:
            self._ensure_workers()

    def close(self) -> None:
        """Stop all workers."""
        with self._lock:
            if os.getpid() != self._pid:
                self._workers, self._spare = [], None  # a forked copy: the processes are our parent's
                return
            for w in self._workers + ([self._spare] if self._spare else []):
                w.kill()
            self._workers, self._spare = [], None

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for diagnostics and tests)."""
        return [w.proc.pid for w in self._workers]

    def _ensure_workers(self) -> None:
        if os.getpid() != self._pid:  # forked: the pipes we hold are our parent's
            self._workers, self._spare, self._pid = [], None, os.getpid()
        alive = []
        for w in self._workers:
            if w.proc.poll() is None:
                alive.append(w)
            else:
                w.kill()
        self._workers = alive
        while len(self._workers) < self.n_workers:
            self._workers.append(_Worker(self.memory_limit_mb, self.start_timeout))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        spare, self._spare = self._spare, None
        if spare is not None and spare.proc.poll() is not None:  # the spare died meanwhile
            spare.kill()
            spare = None
        new = spare or _Worker(self.memory_limit_mb, self.start_timeout)
        # A spare's "ready" line may already wait in its pipe; it is read like any other reply.
        self._workers = [new if w is worker else w for w in self._workers]
        self._spare = _Worker(self.memory_limit_mb, self.start_timeout)

    # -- grading
    def grade(self, gold: str, completion: str, timeout: float | None = None) -> bool:
        return self.grade_many([(gold, completion)], timeout=timeout)[0]

    def grade_many(self, pairs: Sequence[tuple[str, str]], timeout: float | None = None) -> list[bool]:
        """Grade ``(gold, completion)`` pairs; one bool per pair, in order. Never hangs.

        A pair that is not two strings, or whose gold is empty (no recoverable gold answer), scores
        False without reaching a worker.
        """
        limit = self.timeout if timeout is None else float(timeout)
        pairs = list(pairs)
        results = [False] * len(pairs)
        todo = deque(
            i
            for i, p in enumerate(pairs)
            if isinstance(p, (tuple, list))
            and len(p) == 2
            and isinstance(p[0], str)
            and isinstance(p[1], str)
            and p[0].strip()
        )
        if not todo:
            return results
        backstop = int(math.ceil(limit)) * 4 + 10
        with self._lock:
            self._ensure_workers()
            try:
                while todo or any(w.state == "busy" for w in self._workers):
                    self._dispatch(todo, pairs, limit, backstop)
                    self._collect(results)
            except BaseException:
                # Interrupted (Ctrl-C, a worker that cannot start): busy workers would answer
                # into the next batch, so drop them all; the next call starts fresh ones.
                for w in self._workers:
                    w.kill()
                self._workers = []
                raise
        return results

    def _dispatch(self, todo: deque, pairs: list, limit: float, backstop: int) -> None:
        for w in list(self._workers):
            if not todo:
                return
            if w.state != "idle":
                continue
            i = todo[0]
            try:
                w.send(pairs[i][0], pairs[i][1], backstop)
            except OSError:  # died while idle: replace it, the item waits for a worker
                self._replace(w)
                continue
            todo.popleft()
            w.state, w.item, w.deadline = "busy", i, time.monotonic() + limit

    def _collect(self, results: list[bool]) -> None:
        """Wait for the next reply or deadline and process whatever happened."""
        waiting = [w for w in self._workers if w.state in ("starting", "busy")]
        if not waiting:
            return
        soonest = min(w.deadline for w in waiting)
        readable, _, _ = select.select([w.fd for w in waiting], [], [], max(0.0, soonest - time.monotonic()))
        for w in waiting:
            if w.fd in readable:
                self._read(w, results)
        now = time.monotonic()
        for w in list(self._workers):
            if w.state in ("starting", "busy") and w.deadline <= now:
                if select.select([w.fd], [], [], 0)[0]:
                    continue  # the reply is already there; the next round reads it
                if w.state == "starting":
                    w.kill()
                    raise RuntimeError(f"a Math-Verify worker did not start within {self.start_timeout:.0f} s")
                self.n_timeouts += 1
                log.debug("math-verify timed out on item %d", w.item)
                self._replace(w)

    def _read(self, w: _Worker, results: list[bool]) -> None:
        try:
            messages = w.read_lines()
        except (OSError, ValueError):
            messages = None
        if messages is None:  # the worker exited: a crash (segfault, OOM kill) or a failed start
            if w.state == "starting":
                code = w.proc.poll()
                w.kill()
                raise RuntimeError(
                    f"a Math-Verify worker exited during start-up (code {code}); "
                    f"try: {sys.executable} -c 'import math_verify'"
                )
            self.n_errors += 1
            self._replace(w)
            return
        for msg in messages:
            kind = msg[0]
            if kind == "ready":
                w.state = "idle"
            elif w.state == "busy":
                if kind == "ok":
                    results[w.item] = bool(msg[1])
                else:
                    self.n_errors += 1
                    log.debug("math-verify error on item %d: %s", w.item, msg[1])
                w.state, w.item = "idle", -1


# A persistent grader per worker count, so repeated calls (tests, evaluation) pay start-up once.
_SHARED: dict[int, MathVerifyGrader] = {}
_SHARED_LOCK = threading.Lock()


def shared_grader(workers: int = 1) -> MathVerifyGrader:
    """The process-wide grader with ``workers`` workers (closed at interpreter exit)."""
    with _SHARED_LOCK:
        g = _SHARED.get(workers)
        if g is None:
            g = _SHARED[workers] = MathVerifyGrader(workers=workers)
        return g


@atexit.register
def _close_shared() -> None:
    for g in list(_SHARED.values()):
        g.close()
    _SHARED.clear()


def grade_math_verify(gold: str, completion: str, timeout: float = 5.0) -> bool:
    """Math-Verify grade of one completion against a gold answer (gold first), hard timeout."""
    return shared_grader(1).grade(gold, completion, timeout=timeout)
