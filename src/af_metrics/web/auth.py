"""Who is asking, from JupyterHub: OAuth login for browsers, hub tokens for scripts.

af-metrics runs as a JupyterHub service (managed: the hub starts it and passes
``JUPYTERHUB_*`` variables; external: ``hub_url``/``hub_api_token``/``service_name`` settings)
and uses JupyterHub's own ``HubOAuth``: a browser without a valid cookie is sent to the hub's
login and comes back through ``<prefix>oauth_callback`` (its cookie is signed with the key of
``cookie_secret_file``, so it outlives a restart); ``Authorization: token <hub token>``
works for the JSON API. Identity comes only from the hub's answer for that token: a user sees
their own pages; admins (hub admins, members of ``admin_groups``, holders of ``admin_roles``)
see the facility pages and everyone's. ``web_auth = "none"`` makes everyone an admin, for a
private network without a hub.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated

from af_metrics.config import ConfigError, Settings
from af_metrics.web.app import BaseHandler
from af_metrics.web.secret_files import COOKIE_SECRET_BYTES, cookie_secret

log = logging.getLogger("af_metrics.web")

DEFAULT_SERVICE = "af-metrics"
IDENTITY_CACHE_SECONDS = 60  # how long the hub's answer for a token is reused (revocation delay)


@dataclass(frozen=True)
class Viewer:
    name: str
    admin: bool

    def may_see(self, user: str) -> bool:
        return self.admin or self.name == user


def service_name(settings: Settings) -> str:
    return settings.service_name or os.environ.get("JUPYTERHUB_SERVICE_NAME") or DEFAULT_SERVICE


def service_prefix(settings: Settings) -> str:
    """URL path of the pages, ``/`` at both ends (what the hub's proxy forwards to us)."""
    prefix = settings.service_prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{service_name(settings)}/"
    return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"


def listen_address(settings: Settings) -> tuple[str, int]:
    """Where to listen: settings, or the URL the hub gave a managed service when none is set."""
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if url and not {"bind", "port"} & settings.model_fields_set:
        parts = urlsplit(url)
        if parts.hostname and parts.port:
            return parts.hostname, parts.port
    return settings.bind, settings.port


class WebAuth:
    """The hub client and the admin rules, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.open = settings.web_auth == "none"
        self.name = service_name(settings)
        self.prefix = service_prefix(settings)
        self.admin_groups = set(settings.admin_groups)
        self.admin_roles = set(settings.admin_roles)
        # the hub's base path, when af-metrics is reached through the hub's /services/ route
        self.hub_base = self.prefix[: self.prefix.rfind("/services/") + 1] if "/services/" in self.prefix else None
        self.hub_auth: HubOAuth | None = None
        # signs the login cookie; without logins a throw-away key (no file is made)
        self.cookie_secret = secrets.token_bytes(COOKIE_SECRET_BYTES)
        hub_url, token = settings.resolved_hub()
        if self.open or not (hub_url and token):
            return
        try:
            self.cookie_secret = cookie_secret(settings.cookie_secret_file)
        except ConfigError as exc:
            if "cookie_secret_file" in settings.model_fields_set:
                raise
            # the default place (a read-only home, say): logins then last as long as this process
            log.warning("%s; login cookies are signed with a key of this process only: set cookie_secret_file", exc)
        scopes = os.environ.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES")
        self.hub_auth = HubOAuth(
            api_url=f"{hub_url}/hub/api",
            api_token=token,
            hub_prefix=f"{self.hub_base or '/'}hub/",
            base_url=self.prefix,
            oauth_client_id=os.environ.get("JUPYTERHUB_CLIENT_ID") or f"service-{self.name}",
            oauth_redirect_uri=os.environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or f"{self.prefix}oauth_callback",
            access_scopes=set(json.loads(scopes)) if scopes else {f"access:services!service={self.name}"},
            cache_max_age=IDENTITY_CACHE_SECONDS,
        )

    def viewer(self, model: dict[str, Any]) -> Viewer:
        admin = (
            bool(model.get("admin"))
            or bool(self.admin_groups & set(model.get("groups") or ()))
            or bool(self.admin_roles & set(model.get("roles") or ()))
        )
        return Viewer(model["name"], admin)


class HubAuthFromSettings:
    """Handlers use the application's ``WebAuth`` instead of HubOAuth's process-wide singleton."""

    @property
    def hub_auth(self) -> HubOAuth | None:  # type: ignore[override]
        return self.settings["web_auth"].hub_auth  # type: ignore[attr-defined]


class ViewerHandler(HubAuthFromSettings, HubOAuthenticated, BaseHandler):
    """A request from a person or their token; ``self.viewer`` says who.

    API handlers answer 401 without credentials; page handlers (``login_redirect``) send the
    browser to the hub's login instead.
    """

    login_redirect = False
    viewer: Viewer

    async def prepare(self) -> None:
        auth: WebAuth = self.settings["web_auth"]
        if auth.open:
            self.viewer = Viewer("", admin=True)
            return
        if auth.hub_auth is None:
            raise tornado.web.HTTPError(503, "pages need a hub to log users in: set hub_url and hub_api_token (or web_auth = 'none')")
        model = await auth.hub_auth.get_user(self, sync=False)
        if not model:
            if self.login_redirect and self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise tornado.web.HTTPError(401, "log in through the hub, or send 'Authorization: token <your hub API token>'")
        if model.get("kind", "user") != "user":
            raise tornado.web.HTTPError(403, f"{model.get('kind')} {model.get('name')}: af-metrics pages are for users")
        if not auth.hub_auth.check_scopes(self.hub_scopes, model):
            raise tornado.web.HTTPError(403, f"user {model['name']} lacks the scope access:services!service={auth.name}")
        self.current_user = model
        self.viewer = auth.viewer(model)

    def require_admin(self) -> None:
        if not self.viewer.admin:
            raise tornado.web.HTTPError(403, "facility figures are for af-metrics admins")

    def require_may_see(self, user: str) -> None:
        if not self.viewer.may_see(user):
            raise tornado.web.HTTPError(403, "you can only see your own usage")


class OAuthCallbackHandler(HubAuthFromSettings, HubOAuthCallbackHandler):
    """The end of the hub's login: sets the cookie and returns to the page asked for."""

    def prepare(self) -> None:
        if self.hub_auth is None:
            raise tornado.web.HTTPError(503, "no hub configured for logins")
