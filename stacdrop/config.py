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

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

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


SECRET_FIELDS = ("stac_token", "aws_access_key_id", "aws_secret_access_key", "api_token", "catalog_dsn")


class Settings(BaseModel):
    inbox: str = "./inbox"
    store: str = "./data/cogs"
    stac: str = "./data/stac"
    broker: str = "sqlite:///data/queue.db"
    ledger: str = "sqlite:///data/ledger.db"
    queue_prefix: str = Field(default="stacdrop", description="RabbitMQ: prefix of exchange and queue names")
    public_url: str | None = Field(default=None, description="Asset href template, e.g. https://host/bucket/{key}")
    sidecar_wait: float = Field(default=30.0, description="Seconds a raster waits for its sidecar")
    settle_time: float = Field(default=1.0, description="Seconds a file's size and mtime must hold still")
    max_sidecar_bytes: int = Field(
        default=1 << 20, gt=0, description="Largest sidecar read (local and S3 inboxes); larger ones are invalid"
    )
    rescan_interval: float = Field(default=300.0, description="Full inbox rescan period (safety net), 0 = off")
    reconcile_interval: float = Field(
        default=600.0, ge=0, description="S3 inbox: list the prefix and compare with the ledger every N seconds, 0 = off"
    )
    s3_events_amqp: str | None = Field(
        default=None,
        description="S3 inbox: AMQP URL of the broker the object store pushes events to (default: the bus broker "
        "when it is amqp); 'off' = no AMQP events",
    )
    s3_events_exchange: str = Field(default="stacdrop.s3-events", description="S3 inbox: exchange the store pushes to")
    s3_events_exchange_type: str = Field(default="topic", description="S3 inbox: type used when declaring it")
    s3_events_routing_key: str = Field(default="#", description="S3 inbox: binding key (Ceph: the topic name)")
    s3_events_queue: str | None = Field(default=None, description="S3 inbox: queue name (default <queue_prefix>.s3-events)")
    s3_events_sqs: str | None = Field(default=None, description="S3 inbox: SQS queue URL receiving AWS S3 events")
    workers: int = Field(default=1, ge=1)
    max_retries: int = Field(default=5, ge=0)
    source_outage_patience: float = Field(
        default=3600.0, ge=0,
        description="Seconds a source host may stay unreachable before a job's attempts count again")
    claim_stale_after: float = Field(
        default=60.0, gt=0,
        description="Seconds without a heartbeat after which another processor takes over a job being "
                    "converted (stacdrop/claims.py); a dead processor on the same host is taken over at once")
    retry_base: float = Field(default=2.0, gt=0, description="First retry delay in seconds")
    retry_max: float = Field(default=600.0, gt=0, description="Longest retry delay in seconds")
    lease_seconds: float = Field(default=60.0, gt=1, description="Embedded bus: lease a worker renews while busy")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    stac_token: SecretStr | None = Field(default=None, description="STAC API token, sent on write requests only")
    stac_auth_header: str = Field(
        default="Authorization",
        description="Header carrying stac_token; 'Authorization' sends 'Bearer <token>' (unless the token already "
        "names a scheme), any other header the token as is",
    )
    stac_timeout: float = Field(default=30.0, gt=0, description="STAC API request timeout in seconds")
    stac_batch_size: int = Field(default=500, ge=1, description="STAC API: items per bulk request")
    publish_batch_window: float = Field(
        default=1.0, ge=0,
        description="Publisher: seconds to wait after a raster is ready for more items to publish in one batch "
        "(at most stac_batch_size); 0 publishes one item at a time",
    )
    stac_verify: bool = Field(default=True, description="STAC API: read items back after publishing and compare")
    api_token: SecretStr | None = Field(default=None, description="HTTP API: bearer token for write endpoints")
    api_auth_disabled: bool = Field(default=False, description="HTTP API: allow writes without a token (explicit opt-out)")
    api_read_token_required: bool = Field(default=False, description="HTTP API: read endpoints need the token too")
    api_max_body_bytes: int = Field(default=1 << 20, gt=0, description="HTTP API: largest request body (413 above)")
    api_host: str = Field(default="127.0.0.1", description="stacdrop serve: address to listen on")
    api_port: int = Field(default=8000, ge=0, le=65535, description="stacdrop serve: port to listen on")
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_endpoint_url: str | None = None
    store_acl: str | None = Field(default=None, description="S3 store: canned ACL of stored COGs, e.g. public-read")
    max_source_bytes: int = Field(default=200 << 30, gt=0, description="Largest source fetched from a URL")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts URL sources may be fetched from, whatever they resolve to: 'host' (every port) or "
        "'host:port' ('[IPv6]:port'); empty: any host whose addresses are all public (docs/security.md)",
    )
    catalog_dsn: SecretStr | None = Field(
        default=None,
        description="stacdrop backup/restore: libpq URL of the pgstac database (the STAC API's, not the ledger); "
        "restore needs a superuser",
    )
    backup_dir: str = Field(default="./data/backups", description="stacdrop backup: directory or s3://bucket/prefix")
    backup_keep: int = Field(default=30, ge=1, description="stacdrop backup: archives kept, older ones pruned")
    collection_defaults: CollectionSettings = Field(default_factory=CollectionSettings)
    collections: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, entries: list[str]) -> list[str]:
        if entries:  # the parser of stacdrop.urls, so an entry means what the URL policy will match
            from stacdrop.urls import parse_allowed_host  # noqa: PLC0415 - only deployments that list hosts

            for entry in entries:
                parse_allowed_host(entry)  # ValueError naming the entry
        return entries

    def collection(self, collection_id: str) -> CollectionSettings:
        """The effective settings of one collection: its own table over the defaults."""
        override = self.collections.get(collection_id, {})
        base = self.collection_defaults.model_dump(exclude_unset=True)
        try:
            return CollectionSettings(**{**base, **override})
        except ValidationError as exc:
            raise ConfigError(f"collections.{collection_id}: {exc}") from None

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data for the operator: secret settings replaced by '***', URL
        passwords and query values masked (``user:***@``), any secret value found elsewhere masked too."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            if data.get(name):
                data[name] = MASK
        return redact_setting(data, secrets_of(self))


ENV_PREFIX = "STACDROP_"
_ALIASES = {  # the original system's names, and AWS's own
    "ARBUTUS_OBJECT_ACCESS_ID": "aws_access_key_id",
    "ARBUTUS_OBJECT_ACCESS_KEY": "aws_secret_access_key",
    "AUTHORIZATION_TOKEN_STAC": "stac_token",
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
}


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for alias, name in _ALIASES.items():
        if environ.get(alias):
            values[name] = environ[alias]
    for name, field in Settings.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name in ("collections", "collection_defaults"):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not valid JSON: {exc.msg}") from None
        elif name == "allowed_hosts":
            values[name] = [h.strip() for h in raw.split(",") if h.strip()]
        else:
            values[name] = raw
    return values


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
            values.update(tomllib.loads(file.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: {exc}") from None
    values.update(_from_env(environ))
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings ({file or 'environment'}): {exc}") from None
    for collection_id in settings.collections:
        settings.collection(collection_id)  # fail at start, not on the first file
    return settings
