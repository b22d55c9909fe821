"""Secrets af-metrics serve reads from files, so that they never appear in its settings, its
``af-metrics config`` output or a process listing: the bearer token Prometheus sends, and the
key that signs the login cookie (kept across restarts, so people stay logged in).

Any problem with such a file is one line (``ConfigError``) before anything listens. The token
file is read again when it changes (a rotated Kubernetes Secret, a new token from an operator);
a changed file that holds no valid token leaves the previous token in use, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path

from af_metrics.config import ConfigError

log = logging.getLogger(__name__)

COOKIE_SECRET_BYTES = 32  # what tornado's HMAC-SHA256 cookie signature wants, as in JupyterHub
TOKEN_MIN_CHARS = 16
TOKEN = re.compile(r"[\x21-\x7e]+")  # one word of visible ASCII: what fits in an Authorization header
READ_MAX = 4096  # characters read of a secret file: far more than a key or token needs
HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _read(path: Path, what: str) -> tuple[str, int]:
    """The file's text (white space around it dropped) and its mode."""
    try:
        with path.open() as file:
            return file.read(READ_MAX).strip(), os.fstat(file.fileno()).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def metrics_token(path: str) -> str:
    """The bearer token of ``metrics_token_file`` (surrounding white space ignored, as Prometheus does)."""
    token, _ = _read(Path(path).expanduser(), "metrics_token_file")
    if not TOKEN.fullmatch(token) or len(token) < TOKEN_MIN_CHARS:
        raise ConfigError(
            f"metrics_token_file {path} must hold one token of at least {TOKEN_MIN_CHARS} visible characters"
            " (e.g. openssl rand -hex 32)"
        )
    return token


class MetricsToken:
    """The token of ``metrics_token_file`` as it is now: the file is looked at (one ``stat``) at
    most every ``check_every`` seconds and read again when its inode, size or mtime changed."""

    def __init__(self, path: str, check_every: float = 1.0) -> None:
        self.path = Path(path).expanduser()
        self.check_every = check_every
        self._stamp = self._stat()
        self._value = metrics_token(path)  # at start, a bad file stops serve
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows the symbolic links a Kubernetes Secret volume swaps
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def current(self) -> str:
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp  # warned once per change, not per request
                try:
                    self._value = metrics_token(str(self.path))
                    log.info("metrics_token_file %s changed: its new token is in use", self.path)
                except ConfigError as exc:
                    log.warning("%s; the previous token stays in use", exc)
        return self._value


def cookie_secret(path: str) -> bytes:
    """The login cookie's signing key from ``path`` (hex, as JupyterHub's cookie_secret_file),
    made with mode 0600 on first use."""
    file = Path(path).expanduser()
    if not file.exists():
        _create(file)
    text, mode = _read(file, "cookie_secret_file")
    if mode & stat.S_IRWXO:  # as JupyterHub checks its own; a Kubernetes fsGroup mount may add group read
        raise ConfigError(f"cookie_secret_file {file} can be read or written by others (mode {stat.filemode(mode)}): chmod 600 it")
    if not HEX.fullmatch(text) or len(text) < 2 * COOKIE_SECRET_BYTES:
        raise ConfigError(
            f"cookie_secret_file {file} must hold at least {COOKIE_SECRET_BYTES} bytes in hex (openssl rand -hex 32)"
        )
    return bytes.fromhex(text)


def _create(file: Path) -> None:
    """Write a new key, complete and private, or keep the one another process wrote first."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_bytes(COOKIE_SECRET_BYTES).hex() + "\n")
        try:
            os.link(tmp, file)  # atomic, and never replaces a key already there
        except FileExistsError:
            pass
    except OSError as exc:
        raise ConfigError(f"cannot create cookie_secret_file {file}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):  # also when there is no directory to hold it
            tmp.unlink()
