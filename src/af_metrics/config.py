"""Configuration: one settings object, from a TOML file and ``AF_METRICS_*`` environment variables.

Precedence (highest first): command-line options, environment, config file, defaults.
The config file is ``--config PATH``, else ``$AF_METRICS_CONFIG``, else
``<user config dir>/af-metrics/config.toml`` when it exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from af_metrics.accounting.settings import AccountingSettings

APP = "af-metrics"


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


def data_dir() -> Path:
    """The user's data directory: where files af-metrics makes for itself live by default."""
    return Path(platformdirs.user_data_dir(APP))


def default_ledger_url() -> str:
    """A SQLite file in the user's data directory: zero configuration."""
    return f"sqlite:///{data_dir() / 'ledger.db'}"


def default_cookie_secret_file() -> str:
    return str(data_dir() / "cookie_secret")


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


class Settings(BaseSettings):
    """Every setting, with its documented default (see docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="AF_METRICS_", extra="forbid")

    ledger: str = Field(default_factory=default_ledger_url, description="Ledger URL: sqlite:///path or postgresql://...")
    timezone: str = Field("UTC", description="Facility time zone: where a day starts and ends")
    hub_url: str = Field("", description="JupyterHub base URL, e.g. http://hub:8081 (default: $JUPYTERHUB_API_URL's hub)")
    hub_api_token: str = Field("", repr=False, description="Hub API token (default: $JUPYTERHUB_API_TOKEN)")
    poll_interval: float = Field(30.0, gt=0, description="Seconds between collection cycles")
    user_sweep_interval: float = Field(600.0, gt=0, description="Seconds between full user listings")
    request_timeout: float = Field(10.0, gt=0, description="Seconds before a hub request is abandoned")
    page_size: int = Field(200, ge=1, le=10000, description="Users per Hub API page")
    backoff_max: float = Field(300.0, gt=0, description="Longest wait between retries while a source is down")
    bind: str = Field("127.0.0.1", description="Address af-metrics serve listens on")
    port: int = Field(9402, ge=0, le=65535, description="Port af-metrics serve listens on")
    per_user_series_max: int = Field(5000, ge=0, description="Cap on users with per-user series in /metrics")
    dask_static_file: str = Field("", description="YAML file of user -> Dask scheduler dashboard URLs to sample")
    dask_url_template: str = Field("", description="Scheduler dashboard URL of each running hub server, e.g. http://jupyter-{escaped_username}:8787")
    dask_gateway_url: str = Field("", description="dask-gateway base URL whose users' clusters are sampled")
    dask_gateway_password: str = Field("", repr=False, description="dask-gateway shared password (SimpleAuthenticator)")
    dask_interval: float = Field(15.0, gt=0, description="Seconds between Dask scheduler samples (bounds the accounting error)")
    dask_timeout: float = Field(5.0, gt=0, description="Seconds one scheduler read may take, both requests included")
    dask_body_max: int = Field(10 * 1024 * 1024, ge=1024, description="Bytes a scheduler's /metrics answer may have")
    dask_lines_max: int = Field(20000, ge=10, description="Lines a scheduler's /metrics answer may have")
    dask_concurrency: int = Field(64, ge=1, le=1024, description="Schedulers read at the same time")
    web_auth: Literal["hub", "none"] = Field(
        "hub", description="Pages and JSON API: 'hub' (log in through JupyterHub; users see their own pages) or 'none' (anyone who connects sees all)"
    )
    admin_groups: list[str] = Field(default_factory=list, description="Hub groups whose members see the facility pages and every user's (hub admins always do)")
    admin_roles: list[str] = Field(default_factory=list, description="Hub roles whose holders see them too (needs read:roles:users!user in the service's OAuth scopes)")
    service_name: str = Field("", description="af-metrics' service name in the hub (default: $JUPYTERHUB_SERVICE_NAME, else af-metrics)")
    service_prefix: str = Field("", description="URL path of the pages behind the hub's proxy (default: $JUPYTERHUB_SERVICE_PREFIX, else /services/<service_name>/)")
    web_cache_seconds: float = Field(60.0, ge=0, description="Seconds a computed chart or KPI answer is reused for identical requests")
    cookie_secret_file: str = Field(
        default_factory=default_cookie_secret_file,
        description="File with the key that signs the login cookie (hex, mode 0600; made on first use), so a restart keeps people logged in",
    )
    metrics_token_file: str = Field(
        "", description="File with a bearer token that /metrics and /sd/dask then require (default: none, they stay open)"
    )
    accounting: AccountingSettings = Field(
        default_factory=AccountingSettings, description="[accounting] table: site, VO, attribution rules, Prometheus (see docs/accounting.md)"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_path_in_use()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def resolved_hub(self) -> tuple[str, str]:
        """Hub base URL and token, falling back to what JupyterHub gives a managed service."""
        url = self.hub_url
        if not url and os.environ.get("JUPYTERHUB_API_URL"):
            url = os.environ["JUPYTERHUB_API_URL"].rstrip("/").removesuffix("/api").removesuffix("/hub")
        token = self.hub_api_token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        return url.rstrip("/"), token


_config_override: Path | None = None


def _config_path_in_use() -> Path | None:
    if _config_override is not None:
        return _config_override
    env = os.environ.get("AF_METRICS_CONFIG")
    if env:
        return Path(env)
    default = default_config_path()
    return default if default.exists() else None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings; raise ConfigError with one readable line on any problem."""
    global _config_override
    _config_override = Path(config_file) if config_file else None
    path = _config_path_in_use()
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"invalid setting {where}: {err['msg']}") from None
    except Exception as exc:  # TOML syntax errors and the like
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    finally:
        _config_override = None
