"""What the demo does on its facility: a morning at an analysis facility, compressed into a minute.

Users sign up and start servers with different profiles, one picks an image that cannot be
pulled and retries, one opens a second (named) server, some stop and come back. Each step is
one Hub API action and the wait for its outcome; the collector watches meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from af_metrics.demo.driver import HubDriver

NAMES = ("alice", "bob", "carmen", "deepak", "emma", "farid", "grace", "hiro", "ines", "jun")
PROFILE_CYCLE = ("cms-coffea", "atlas-columnar", "minimal")


@dataclass(frozen=True, slots=True)
class Step:
    what: str
    act: Callable[[float], None]  # called with the seconds it may take


def user_names(n: int) -> list[str]:
    return [NAMES[i] if i < len(NAMES) else f"user{i + 1:02d}" for i in range(n)]


def morning(drive: HubDriver, users: list[str]) -> list[Step]:
    """The demo's steps for ``users`` (at least one)."""
    broken = users[min(3, len(users) - 1)]
    first = {u: "broken-image" if u == broken else PROFILE_CYCLE[i % len(PROFILE_CYCLE)] for i, u in enumerate(users)}

    def sign_up(_: float) -> None:
        drive.create_users(users)

    def request(user: str) -> Callable[[float], None]:
        return lambda _: drive.start_server(user, "", first[user])

    def all_up(timeout: float) -> None:
        for user in users:
            if user == broken:
                drive.wait_stopped(user, "", timeout)  # its spawn fails
            else:
                drive.wait_ready(user, "", timeout)

    def start(user: str, server: str, profile: str) -> Callable[[float], None]:
        def act(timeout: float) -> None:
            drive.start_server(user, server, profile)
            drive.wait_ready(user, server, timeout)

        return act

    def stop(user: str, server: str = "") -> Callable[[float], None]:
        def act(timeout: float) -> None:
            drive.stop_server(user, server)
            drive.wait_stopped(user, server, timeout)

        return act

    steps = [Step(f"{len(users)} users sign up", sign_up)]
    steps += [Step(f"{u} starts a server ({first[u]})", request(u)) for u in users]
    steps.append(Step(f"servers come up; {broken}'s image cannot be pulled", all_up))
    steps.append(Step(f"{broken} retries with cms-coffea", start(broken, "", "cms-coffea")))
    steps.append(Step(f"{users[0]} opens a named server 'dask-gpu'", start(users[0], "dask-gpu", "atlas-columnar")))
    if len(users) > 1:
        steps.append(Step(f"{users[1]} stops their server", stop(users[1])))
        steps.append(Step(f"{users[1]} comes back (minimal)", start(users[1], "", "minimal")))
    if len(users) > 2:
        steps.append(Step(f"{users[2]} stops for lunch", stop(users[2])))
    steps.append(Step(f"{users[0]} stops 'dask-gpu'", stop(users[0], "dask-gpu")))
    return steps

