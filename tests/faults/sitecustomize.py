"""Fault injection for the SIGKILL test: with this directory on PYTHONPATH and
``AF_TEST_KILL_AT_WRITE=n``, the process SIGKILLs itself right after its n-th write to the
session tables has executed, inside the still-open transaction of ``Ledger.apply``.

Python imports ``sitecustomize`` at start-up, so af-metrics itself carries no test hook.
"""

import os
import re
import signal

from sqlalchemy import event
from sqlalchemy.engine import Engine

WRITE = re.compile(r'\s*(INSERT INTO|UPDATE|DELETE FROM)\s+"?(users|sessions|session_hours|spawns|spawn_buckets)\b', re.I)
_left = int(os.environ["AF_TEST_KILL_AT_WRITE"])


@event.listens_for(Engine, "after_cursor_execute")
def _kill_inside_the_transaction(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
    global _left
    if WRITE.match(statement):
        _left -= 1
        if _left == 0:
            assert conn.in_transaction()
            os.kill(os.getpid(), signal.SIGKILL)
