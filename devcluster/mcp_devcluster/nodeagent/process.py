"""Starting and stopping container processes without leaking any.

Every process is started in its own session (so its process group can be signalled as a
whole) by one long-lived spawner thread, through ``setpriv --pdeathsig KILL`` when
available: Linux delivers the parent-death signal when the *thread* that forked the child
exits, so forking from short-lived worker threads would kill children early, and forking
from the spawner means a SIGKILLed agent still takes its children with it. Each process
also carries ``NODEAGENT_STATE_DIR`` in its environment, so a new agent can find and kill
leftovers of a previous one that died in a way even pdeathsig could not cover.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("nodeagent.process")

MARKER_ENV = "NODEAGENT_STATE_DIR"
_SETPRIV = shutil.which("setpriv")


class Spawner:
    """Forks every child from one thread that lives as long as the agent."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Future[subprocess.Popen[bytes]], dict[str, Any]] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="spawner", daemon=True)
        self._thread.start()

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: str, log_file: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session, output to ``log_file``; raise OSError on failure."""
        if _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        fut: Future[subprocess.Popen[bytes]] = Future()
        kwargs = {
            "args": argv,
            "env": env,
            "cwd": cwd,
            "stdout": log_file,
            "stderr": subprocess.STDOUT,
            "stdin": subprocess.DEVNULL,
            "start_new_session": True,
            "close_fds": True,
        }
        self._queue.put((fut, kwargs))
        return fut.result(timeout=30)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fut, kwargs = item
            try:
                fut.set_result(subprocess.Popen(**kwargs))
            except Exception as exc:
                fut.set_exception(exc)


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid``; a vanished group is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the group, SIGKILL after ``grace`` seconds; return the exit code."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(grace, 0.0))
    signal_group(proc.pid, signal.SIGKILL)  # stragglers in the group, even if the leader exited
    return proc.wait()


def kill_leftovers(state_dir: Path) -> int:
    """SIGKILL process groups whose environment names ``state_dir`` (a dead agent's children)."""
    marker = f"{MARKER_ENV}={state_dir}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            pid = int(entry.name)
            with contextlib.suppress(OSError):
                signal_group(os.getpgid(pid), signal.SIGKILL)
                killed += 1
    if killed:
        log.warning("killed %d leftover process(es) of a previous agent", killed)
        time.sleep(0.2)
    return killed
