"""Faults for the demo, the e2e tests and the benchmarks: find a pod's processes under the
node agent, kill them and keep them dead (a crash-looping server), or hang them.

The node agent restarts a crashed container at once the first time (as a kubelet does), so
a single kill heals in about a second; "keep dead" kills every restart until released.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(8):
        pid = _ppid(pid)
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def pod_pids(agent_pid: int, ips: set[str]) -> list[int]:
    """Live processes under the node agent whose argv has ``--host <ip>`` for one of ``ips``
    (several agents may share a host and even a pod CIDR: the ancestry check keeps us on
    ours)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            if "--host" not in argv[:-1] or argv[argv.index("--host") + 1] not in ips:
                continue
            if _descends_from(pid, agent_pid):
                found.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return found


def signal_pods(agent_pid: int, ips: set[str], sig: signal.Signals) -> list[int]:
    pids = pod_pids(agent_pid, ips)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


@contextlib.contextmanager
def kept_dead(agent_pid: int, ips: set[str], poll: float = 0.05) -> Iterator[dict[str, Any]]:
    """SIGKILL the pods' processes now and every time the agent restarts them, until exit.
    Yields a dict with ``first_kill`` (monotonic time, None until a process was found)
    and ``kills``."""
    info: dict[str, Any] = {"first_kill": None, "kills": 0}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            killed = signal_pods(agent_pid, ips, signal.SIGKILL)
            if killed:
                info["kills"] += len(killed)
                if info["first_kill"] is None:
                    info["first_kill"] = time.monotonic()
            stop.wait(poll)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while info["first_kill"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if info["first_kill"] is None:
            raise RuntimeError(f"no process found for {sorted(ips)}")
        yield info
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def hung(agent_pid: int, ips: set[str]) -> Iterator[list[int]]:
    """SIGSTOP the pods' processes; SIGCONT them on exit (also on failure)."""
    pids = signal_pods(agent_pid, ips, signal.SIGSTOP)
    if not pids:
        raise RuntimeError(f"no process found for {sorted(ips)}")
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
