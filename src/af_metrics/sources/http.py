"""Bounded reads of answers that other parties control: the hub, users' schedulers, gateways.

One place decides how an answer is read: streamed, refused past a byte (and optionally a line)
cap, and only when the status is 200. Callers turn ``ReadError`` into their own one-line error.
"""

from __future__ import annotations

import httpx


class ReadError(RuntimeError):
    """An answer could not be taken; ``status`` is the HTTP status when it was not 200."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def read_capped(
    client: httpx.AsyncClient,
    url: str,
    body_max: int,
    lines_max: int | None = None,
    headers: dict | None = None,
    params: dict | None = None,
) -> bytearray:
    """The (decoded) body of a 200 answer; ReadError past ``body_max`` bytes or ``lines_max`` lines."""
    async with client.stream("GET", url, params=params, headers=headers) as resp:
        if resp.status_code != 200:
            raise ReadError(f"{url} answered HTTP {resp.status_code}", resp.status_code)
        body = bytearray()
        lines = 0
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > body_max:
                raise ReadError(f"{url} answer exceeds {body_max} bytes")
            if lines_max is not None:
                lines += chunk.count(b"\n")
                if lines > lines_max:
                    raise ReadError(f"{url} answer exceeds {lines_max} lines")
        return body
