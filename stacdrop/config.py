"""Settings: defaults, then a TOML config file, then ``STACDROP_*`` environment variables.

The config file is ``--config FILE``, else ``$STACDROP_CONFIG``, else ``./stacdrop.toml`` when present.
Per-collection settings live in ``[collections.<id>]`` tables and fall back to ``[collection_defaults]``::

    inbox = "./inbox"
    [collections.esacci-lc]
    key_template = "ESACCI-LC-L4-LCCS-Map-300m-P1Y-{year}-v2.0.7.tif"
    resampling = "mode"
    [collections.chelsa-clim]
    key_template = "{id}.tif"
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from stacdrop.errors import ConfigError
from stacdrop.redact import MASK, redact_setting, secrets_of

RESAMPLINGS = ("nearest", "mode", "average", "bilinear", "cubic", "cubicspline", "lanczos", "rms", "gauss")


class CollectionSettings(BaseModel):
    """How the items of one collection are made."""

    key_template: str | None = Field(
        default=None, description="Template over the path inside the collection folder, e.g. '{variable}_{year}.tif'"
    )
    allow_key_only: bool = Field(default=False, description="Publish rasters that come without a sidecar")
    resampling: Literal[RESAMPLINGS] = Field(  # type: ignore[valid-type]
        default="average", description="Overview resampling: nearest or mode for categorical data"
    )
    target_crs: str | None = Field(default=None, description="Reproject to this CRS, e.g. EPSG:4326")
    asset_key: str = "data"
    duplicate_policy: Literal["replace", "skip", "error"] = "replace"
    create_if_missing: bool = Field(default=False, description="Create the collection when an item needs it")
    store_key: str = Field(default="{collection}/{filename}", description="Store key template for the COG")
    properties: dict[str, Any] = Field(default_factory=dict, description="Default item properties")
    sidecar_extra_fields: Literal["reject", "properties"] = Field(
        default="reject",
        description="Unknown top-level sidecar fields: 'reject' (an invalid_sidecar error naming them) or "
        "'properties' (the old behaviour: they become item properties)",
    )
    on_delete: Literal["keep", "unpublish"] = Field(
        default="keep",
        description="A raster removed from the inbox (its folder or bucket): 'keep' its item and COG, or "
        "'unpublish' the item and delete the COG (the inbox folder's collection decides)",
    )
    # Resource limits, checked before any conversion work (processor.limits). Their home is here, not in
    # Settings, so one table holds both the default and the per-collection override:
    # [collection_defaults] max_bands = 2000 raises it for all, [collections.X] max_bands = 5000 for one.
    max_pixels_per_band: int = Field(
        default=1 << 34, gt=0, description="Largest width x height (2**34 lets 129,600 x 64,800 through)"
    )
    max_bands: int = Field(default=1000, gt=0, description="Most bands in one raster (EBV cubes have hundreds)")
    max_output_bytes: int = Field(
        default=1 << 40, gt=0, description="Largest estimated COG (uncompressed size x 1.34 for the overviews)"
    )
    max_compression_ratio: float = Field(
        default=1100.0, gt=0,
        description="DEFLATE input: largest declared-uncompressed / stored bytes (DEFLATE cannot pass ~1032)",
    )
    allow_shared_blocks: bool = Field(
        default=False, description="Accept TIFFs whose tiles/strips point at the same bytes (a bomb's trick)"
    )


class Collections:
    """The per-collection settings: each ``[collections.<id>]`` table over ``[collection_defaults]``. The
    stages take this, not the whole Settings: it is all they need to know about other collections."""

    def __init__(self, defaults: CollectionSettings, tables: dict[str, dict[str, Any]]) -> None:
        self._base = defaults.model_dump(exclude_unset=True)
        self._tables = tables

    def get(self, collection_id: str) -> CollectionSettings:
        """The effective settings of one collection. Raises ConfigError naming the table."""
        try:
            return CollectionSettings(**{**self._base, **self._tables.get(collection_id, {})})
        except ValidationError as exc:
            raise ConfigError(f"collections.{collection_id}: {exc}") from None

    @property
    def ids(self) -> list[str]:
        return list(self._tables)


class Section(BaseModel):
    """A group of settings one component takes: it never sees the others."""

    model_config = ConfigDict(extra="forbid")


class InboxSettings(Section):
    """The local inbox (watcher/inbox.py) and what every inbox shares: pairing and settling."""

    path: str = Field(default="./inbox", description="Where sources are dropped")
    sidecar_wait: float = Field(default=30.0, description="Seconds a raster waits for its sidecar")
    settle_time: float = Field(default=1.0, description="Seconds a file's size and mtime must hold still")
    rescan_interval: float = Field(default=300.0, description="Full inbox rescan period (safety net), 0 = off")


class S3Settings(Section):
    """S3 access (the store, the S3 inbox, s3:// sources, backups) and the S3 inbox's event feeds."""

    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    endpoint_url: str | None = None
    store_acl: str | None = Field(default=None, description="S3 store: canned ACL of stored COGs, e.g. public-read")
    reconcile_interval: float = Field(
        default=600.0,
        ge=0,
        description="S3 inbox: list the prefix and compare with the ledger every N seconds, 0 = off",
    )
    events_amqp: str | None = Field(
        default=None,
        description="S3 inbox: AMQP URL of the broker the object store pushes events to (default: the bus broker "
        "when it is amqp); 'off' = no AMQP events",
    )
    events_exchange: str = Field(default="stacdrop.s3-events", description="S3 inbox: exchange the store pushes to")
    events_exchange_type: str = Field(default="topic", description="S3 inbox: type used when declaring it")
    events_routing_key: str = Field(default="#", description="S3 inbox: binding key (Ceph: the topic name)")
    events_queue: str | None = Field(
        default=None, description="S3 inbox: queue name (default <queue_prefix>.s3-events)"
    )
    events_sqs: str | None = Field(default=None, description="S3 inbox: SQS queue URL receiving AWS S3 events")


class BusSettings(Section):
    """The bus and how the stage runtime uses it: workers, retries, leases, claims."""

    url: str = Field(default="sqlite:///data/queue.db", description="Embedded SQLite, or amqp://user:pw@host/vhost")
    queue_prefix: str = Field(default="stacdrop", description="RabbitMQ: prefix of exchange and queue names")
    workers: int = Field(default=1, ge=1)
    max_retries: int = Field(default=5, ge=0)
    retry_base: float = Field(default=2.0, gt=0, description="First retry delay in seconds")
    retry_max: float = Field(default=600.0, gt=0, description="Longest retry delay in seconds")
    source_outage_patience: float = Field(
        default=3600.0, ge=0,
        description="Seconds a source host may stay unreachable before a job's attempts count again")
    claim_stale_after: float = Field(
        default=60.0, gt=0,
        description="Seconds without a heartbeat after which another processor takes over a job being "
                    "converted (stacdrop/claims.py); a dead processor on the same host is taken over at once")
    lease_seconds: float = Field(default=60.0, gt=1, description="Embedded bus: lease a worker renews while busy")


class StacApiSettings(Section):
    """Publishing to a STAC API (publisher/stac_api.py); the sink's URL is the top-level ``stac``."""

    token: SecretStr | None = Field(default=None, description="STAC API token, sent on write requests only")
    auth_header: str = Field(
        default="Authorization",
        description="Header carrying the token; 'Authorization' sends 'Bearer <token>' (unless the token already "
        "names a scheme), any other header the token as is",
    )
    timeout: float = Field(default=30.0, gt=0, description="STAC API request timeout in seconds")
    batch_size: int = Field(default=500, ge=1, description="STAC API: items per bulk request")
    publish_batch_window: float = Field(
        default=1.0, ge=0,
        description="Publisher: seconds to wait after a raster is ready for more items to publish in one batch "
        "(at most batch_size); 0 publishes one item at a time",
    )
    verify: bool = Field(default=True, description="STAC API: read items back after publishing and compare")


class ApiSettings(Section):
    """stacdrop's own HTTP API and status page (stacdrop serve)."""

    token: SecretStr | None = Field(default=None, description="HTTP API: bearer token for write endpoints")
    auth_disabled: bool = Field(default=False, description="HTTP API: allow writes without a token (explicit opt-out)")
    read_token_required: bool = Field(default=False, description="HTTP API: read endpoints need the token too")
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="HTTP API: largest request body (413 above)")
    host: str = Field(default="127.0.0.1", description="stacdrop serve: address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="stacdrop serve: port to listen on")


class BackupSettings(Section):
    """stacdrop backup / restore."""

    catalog_dsn: SecretStr | None = Field(
        default=None,
        description="libpq URL of the pgstac database (the STAC API's, not the ledger); restore needs a superuser",
    )
    dir: str = Field(default="./data/backups", description="Directory or s3://bucket/prefix")
    keep: int = Field(default=30, ge=1, description="Archives kept, older ones pruned")


class LimitsSettings(Section):
    """What a crafted input may cost before it is refused (docs/security.md). The raster limits are per
    collection (CollectionSettings), so one table holds a default and its overrides."""

    max_sidecar_bytes: int = Field(
        default=1 << 20, gt=0, description="Largest sidecar read (local and S3 inboxes); larger ones are invalid"
    )
    max_source_bytes: int = Field(default=200 << 30, gt=0, description="Largest source fetched from a URL")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts URL sources may be fetched from, whatever they resolve to: 'host' (every port) or "
        "'host:port' ('[IPv6]:port'); empty: any host whose addresses are all public (docs/security.md)",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, entries: list[str]) -> list[str]:
        if entries:  # the parser of stacdrop.urls, so an entry means what the URL policy will match
            from stacdrop.urls import parse_allowed_host  # noqa: PLC0415 - only deployments that list hosts

            for entry in entries:
                parse_allowed_host(entry)  # ValueError naming the entry
        return entries


SECTIONS: dict[str, type[Section]] = {
    "inbox": InboxSettings, "s3": S3Settings, "bus": BusSettings, "stac_api": StacApiSettings,
    "api": ApiSettings, "backup": BackupSettings, "limits": LimitsSettings,
}

# The flat names (the TOML keys and STACDROP_* variables of every earlier release, and of the README) and
# the section field each one sets. They stay valid input: a deployment's .env does not break because the
# code grew sections.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    "inbox": ("inbox", "path"), "sidecar_wait": ("inbox", "sidecar_wait"), "settle_time": ("inbox", "settle_time"),
    "rescan_interval": ("inbox", "rescan_interval"),
    "aws_access_key_id": ("s3", "access_key_id"), "aws_secret_access_key": ("s3", "secret_access_key"),
    "aws_endpoint_url": ("s3", "endpoint_url"), "store_acl": ("s3", "store_acl"),
    "reconcile_interval": ("s3", "reconcile_interval"), "s3_events_amqp": ("s3", "events_amqp"),
    "s3_events_exchange": ("s3", "events_exchange"), "s3_events_exchange_type": ("s3", "events_exchange_type"),
    "s3_events_routing_key": ("s3", "events_routing_key"), "s3_events_queue": ("s3", "events_queue"),
    "s3_events_sqs": ("s3", "events_sqs"),
    "broker": ("bus", "url"), "queue_prefix": ("bus", "queue_prefix"), "workers": ("bus", "workers"),
    "max_retries": ("bus", "max_retries"), "retry_base": ("bus", "retry_base"), "retry_max": ("bus", "retry_max"),
    "source_outage_patience": ("bus", "source_outage_patience"), "claim_stale_after": ("bus", "claim_stale_after"),
    "lease_seconds": ("bus", "lease_seconds"),
    "stac_token": ("stac_api", "token"), "stac_auth_header": ("stac_api", "auth_header"),
    "stac_timeout": ("stac_api", "timeout"), "stac_batch_size": ("stac_api", "batch_size"),
    "publish_batch_window": ("stac_api", "publish_batch_window"), "stac_verify": ("stac_api", "verify"),
    "api_token": ("api", "token"), "api_auth_disabled": ("api", "auth_disabled"),
    "api_read_token_required": ("api", "read_token_required"), "api_max_body_bytes": ("api", "max_body_bytes"),
    "api_host": ("api", "host"), "api_port": ("api", "port"),
    "catalog_dsn": ("backup", "catalog_dsn"), "backup_dir": ("backup", "dir"), "backup_keep": ("backup", "keep"),
    "max_sidecar_bytes": ("limits", "max_sidecar_bytes"), "max_source_bytes": ("limits", "max_source_bytes"),
    "allowed_hosts": ("limits", "allowed_hosts"),
}


def _is_flat(key: str, value: Any) -> bool:
    # "inbox" is both a flat name (the path, a string) and a section (a table)
    return key in FLAT_NAMES and not (key in SECTIONS and isinstance(value, (dict, BaseModel)))


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """One source's values with flat names folded into their sections. Within one source a section's own
    table is the more specific spelling and wins over a flat name for the same field."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not _is_flat(key, value):
            out[key] = value.model_dump(exclude_unset=True) if isinstance(value, Section) else value
    for key, value in values.items():
        if _is_flat(key, value):
            section, name = FLAT_NAMES[key]
            table = out.setdefault(section, {})
            if isinstance(table, dict):
                table.setdefault(name, value)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base`` (both nested); sections merge field by field."""
    out = dict(base)
    for key, value in over.items():
        if key in SECTIONS and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class Settings(BaseModel):
    """The effective settings: the few that say where things are (store, catalog, ledger) and how to log,
    then one section per component, which takes its own section and never the whole Settings."""

    model_config = ConfigDict(extra="ignore")  # as before sections: an unknown top-level key is ignored

    store: str = Field(default="./data/cogs", description="A directory, or s3://bucket/prefix")
    stac: str = Field(default="./data/stac", description="A static catalog directory, or a STAC API URL")
    ledger: str = Field(default="sqlite:///data/ledger.db", description="SQLite or postgresql://...")
    public_url: str | None = Field(default=None, description="Asset href template, e.g. https://host/bucket/{key}")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    inbox: InboxSettings = Field(default_factory=InboxSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    bus: BusSettings = Field(default_factory=BusSettings)
    stac_api: StacApiSettings = Field(default_factory=StacApiSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    collection_defaults: CollectionSettings = Field(default_factory=CollectionSettings)
    collections: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, values: Any) -> Any:
        return _nest(values) if isinstance(values, dict) else values

    def replace(self, **values: Any) -> Settings:
        """A copy with some settings changed (flat names or sections), validated like the original."""
        return Settings(**_merge(self.model_dump(exclude_unset=True), _nest(values)))

    @property
    def collection_settings(self) -> Collections:
        return Collections(self.collection_defaults, self.collections)

    def collection(self, collection_id: str) -> CollectionSettings:
        """The effective settings of one collection: its own table over the defaults."""
        return self.collection_settings.get(collection_id)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data for the operator: secret settings replaced by '***', URL
        passwords and query values masked (``user:***@``), any secret value found elsewhere masked too."""
        data = self.model_dump(mode="json")
        for section, name in SECRET_FIELDS:
            if data[section].get(name):
                data[section][name] = MASK
        return redact_setting(data, secrets_of(self))


SECRET_FIELDS = (("stac_api", "token"), ("s3", "access_key_id"), ("s3", "secret_access_key"), ("api", "token"),
                 ("backup", "catalog_dsn"))

ENV_PREFIX = "STACDROP_"
_ALIASES = {  # the original system's names, and AWS's own
    "ARBUTUS_OBJECT_ACCESS_ID": "aws_access_key_id",
    "ARBUTUS_OBJECT_ACCESS_KEY": "aws_secret_access_key",
    "AUTHORIZATION_TOKEN_STAC": "stac_token",
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
}
_JSON_VALUES = ("collections", "collection_defaults")
_LIST_VALUES = ("allowed_hosts",)


def _env_value(name: str, variable: str, raw: str) -> Any:
    if name in _JSON_VALUES:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{variable} is not valid JSON: {exc.msg}") from None
    if name in _LIST_VALUES:
        return [h.strip() for h in raw.split(",") if h.strip()]
    return raw


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    """``STACDROP_<NAME>`` for a top-level or flat name (``STACDROP_STORE``, ``STACDROP_BROKER``), or
    ``STACDROP_<SECTION>__<FIELD>`` (``STACDROP_BUS__URL``), which wins; the original system's names too."""
    values: dict[str, Any] = {}
    for alias, name in _ALIASES.items():
        if environ.get(alias):
            values[name] = environ[alias]
    for name in [*(n for n in Settings.model_fields if n not in SECTIONS), *FLAT_NAMES]:
        variable = ENV_PREFIX + name.upper()
        if environ.get(variable) is not None:
            values[name] = _env_value(name, variable, environ[variable])
    tables: dict[str, dict[str, Any]] = {}
    for section, model in SECTIONS.items():
        for field in model.model_fields:
            variable = f"{ENV_PREFIX}{section.upper()}__{field.upper()}"
            if environ.get(variable) is not None:
                tables.setdefault(section, {})[field] = _env_value(field, variable, environ[variable])
    return _merge(_nest(values), tables)


def config_file(explicit: str | os.PathLike[str] | None, environ: dict[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get("STACDROP_CONFIG"):
        return Path(environ["STACDROP_CONFIG"])
    default = Path("stacdrop.toml")
    return default if default.exists() else None


def load_settings(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build the effective settings. Raises ConfigError naming the file and the bad field."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    file = config_file(path, environ)
    if file is not None:
        try:
            values = _nest(tomllib.loads(file.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: {exc}") from None
    values = _merge(values, _from_env(environ))
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings ({file or 'environment'}): {exc}") from None
    for collection_id in settings.collections:
        settings.collection(collection_id)  # fail at start, not on the first file
    return settings
