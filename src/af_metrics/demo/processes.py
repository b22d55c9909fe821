"""Process checks shared by the facility and its spawner (POSIX; zombie detection on Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def is_zombie(pid: int) -> bool:
    """An exited process nobody reaped yet: it is not running, though ``kill(pid, 0)`` succeeds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)


def kill_group(pid: int, sig: int) -> None:
    """Signal a process and its process group (servers and the proxy run in their own sessions)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
