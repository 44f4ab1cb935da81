"""Wiring a bucket's notifications to stacdrop, without reading three vendors' manuals.

``stacdrop s3 notifications setup | show | remove`` connects the S3 inbox's bucket to where stacdrop reads
events (docs/s3-notifications.md):

* **Ceph RGW** (Arbutus): a topic made through RGW's SNS API, pushing to stacdrop's AMQP exchange with
  ``amqp-ack-level=broker`` and ``persistent=true`` (events survive a broker outage), then the bucket's
  notification configuration (``s3:ObjectCreated:*``, ``s3:ObjectRemoved:*`` under the inbox prefix).
  RGW never declares the exchange and silently drops events for a missing one, so it is declared here
  first. RGW keeps one AMQP connection per push-endpoint URL, bound to the first exchange it was used
  with: a second topic with the same URL and another exchange gets "exchange mismatch" in the RGW log
  and its events are dropped, so every topic of one broker must name the same exchange (the default
  ``stacdrop.s3-events``). RGW 16.2 refuses a push endpoint with a password over plain http; over http
  the SNS calls carry ``X-Forwarded-Proto: https``, which RGW honours when ``rgw trust forwarded https``
  is on (the gateway operator's setting), else the call fails with RGW's own message.
* **AWS S3**: an SQS queue with a policy letting the bucket send to it, then the bucket's notification
  configuration; the queue URL is what ``s3_events_sqs`` must name.
* **MinIO**: its notification targets are server configuration (``mc admin config set``), which an S3
  client cannot change: ``setup`` prints the ``mc`` commands for the settings in force.

The AMQP URL's password is the operator's secret: what is shown or raised goes through stacdrop.redact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from stacdrop.config import Settings
from stacdrop.errors import ConfigError
from stacdrop.redact import redact_setting, redact_text, redact_url
from stacdrop.s3 import classify_s3_error, parse_s3_url, s3_client, s3_credentials

NOTIFICATION_ID = "stacdrop"
EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


class Flavour(StrEnum):
    CEPH = "ceph"
    AWS = "aws"
    MINIO = "minio"


@dataclass
class Wiring:
    """What connects the bucket to stacdrop, as found or made: printed by ``show`` and ``setup``."""

    flavour: Flavour
    bucket: str
    prefix: str
    target: str = ""  # the topic ARN (Ceph), the queue ARN (AWS), the MinIO target ARN
    details: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # MinIO: what the operator runs

    def as_dict(self, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
        """For the operator: the push endpoint's password and every configured secret masked."""
        return redact_setting({"flavour": self.flavour.value, "bucket": self.bucket, "prefix": self.prefix,
                               "target": self.target, "details": self.details, "commands": self.commands}, secrets)


def inbox_bucket(settings: Settings) -> tuple[str, str]:
    """The S3 inbox's bucket and key prefix (with a trailing slash when not empty)."""
    if not settings.inbox.path.startswith("s3://"):
        raise ConfigError(f"inbox {settings.inbox.path!r} is not an s3:// inbox: there is no bucket to wire")
    bucket, prefix = parse_s3_url(settings.inbox.path)
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def detect_flavour(settings: Settings, client: Any, bucket: str) -> Flavour:
    """AWS when no endpoint is set; else what the server says it is: MinIO names itself in ``Server``,
    RGW's request ids are ``tx...``."""
    if not settings.s3.endpoint_url:
        return Flavour.AWS
    headers = client.head_bucket(Bucket=bucket)["ResponseMetadata"].get("HTTPHeaders", {})
    if "minio" in headers.get("server", "").lower():
        return Flavour.MINIO
    if headers.get("x-amz-request-id", "").startswith("tx") or "rgw" in headers.get("server", "").lower():
        return Flavour.CEPH
    return Flavour.AWS


def topic_name(settings: Settings, bucket: str) -> str:
    """The Ceph topic: the binding key when one is set (the routing key RGW uses is the topic name)."""
    key = settings.s3.events_routing_key
    return key if key and key != "#" else f"stacdrop-{bucket}"


def events_amqp_url(settings: Settings) -> str:
    url = settings.s3.events_amqp or (settings.bus.url if settings.bus.url.startswith("amqp") else None)
    if not url or url == "off":
        raise ConfigError("no AMQP broker for S3 events: set s3_events_amqp (STACDROP_S3_EVENTS_AMQP) or an "
                          "amqp:// broker")
    return url


# -- Ceph RGW -------------------------------------------------------------------------------------------


def _sns(settings: Settings) -> Any:
    import boto3  # noqa: PLC0415 - only S3 deployments import boto3

    sns = boto3.client("sns", endpoint_url=settings.s3.endpoint_url, region_name="default",
                       **s3_credentials(settings.s3))
    if urlsplit(settings.s3.endpoint_url or "").scheme == "http":
        def forwarded_https(request: Any, **_kwargs: Any) -> None:
            request.headers["X-Forwarded-Proto"] = "https"

        sns.meta.events.register("before-sign.sns.*", forwarded_https)
    return sns


def push_endpoint(amqp_url: str) -> str:
    """The AMQP URL as RGW must be given it: RGW takes the path as the vhost name literally, so the
    default vhost ``/`` (``/%2F`` in a pika URL) is given as no path at all."""
    parts = urlsplit(amqp_url)
    if parts.path in ("", "/", "/%2F", "/%2f"):
        return parts._replace(path="", query="").geturl()
    return amqp_url


def declare_exchange(amqp_url: str, exchange: str, exchange_type: str) -> None:
    import pika  # noqa: PLC0415 - only AMQP deployments

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        conn.channel().exchange_declare(exchange, exchange_type, durable=True)
    finally:
        conn.close()


def _ceph_setup(settings: Settings, client: Any, bucket: str, prefix: str) -> Wiring:
    amqp_url = events_amqp_url(settings)
    exchange = settings.s3.events_exchange
    declare_exchange(amqp_url, exchange, settings.s3.events_exchange_type)
    name = topic_name(settings, bucket)
    attributes = {"push-endpoint": push_endpoint(amqp_url), "amqp-exchange": exchange, "amqp-ack-level": "broker",
                  "persistent": "true", "OpaqueData": f"stacdrop:{bucket}/{prefix}"}
    arn = _sns(settings).create_topic(Name=name, Attributes=attributes)["TopicArn"]
    config: dict[str, Any] = {"Id": NOTIFICATION_ID, "TopicArn": arn, "Events": EVENTS}
    if prefix:
        config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    # RGW merges configurations by Id (AWS replaces them all): ours is one entry, written whole.
    client.put_bucket_notification_configuration(Bucket=bucket,
                                                 NotificationConfiguration={"TopicConfigurations": [config]})
    return _ceph_show(settings, client, bucket, prefix)


def _ceph_show(settings: Settings, client: Any, bucket: str, prefix: str) -> Wiring:
    found = client.get_bucket_notification_configuration(Bucket=bucket).get("TopicConfigurations", [])
    ours = [c for c in found if c.get("Id") == NOTIFICATION_ID]
    wiring = Wiring(Flavour.CEPH, bucket, prefix)
    if ours:
        wiring.target = ours[0]["TopicArn"]
        wiring.details["events"] = ours[0].get("Events", [])
        try:
            attrs = _sns(settings).get_topic_attributes(TopicArn=wiring.target)["Attributes"]
        except Exception as exc:  # noqa: BLE001 - shown, not fatal: the topic may be gone
            attrs = {"error": str(classify_s3_error(exc) or type(exc).__name__)}
        wiring.details["topic"] = {k: v for k, v in attrs.items() if k in (
            "Name", "EndPoint", "Policy", "push-endpoint", "amqp-exchange", "amqp-ack-level", "persistent",
            "OpaqueData", "error")} or attrs
    return wiring


def _ceph_remove(settings: Settings, client: Any, bucket: str, prefix: str) -> Wiring:
    wiring = _ceph_show(settings, client, bucket, prefix)
    _delete_notification(settings, bucket, NOTIFICATION_ID)
    if wiring.target:
        _sns(settings).delete_topic(TopicArn=wiring.target)
    return wiring


def _delete_notification(settings: Settings, bucket: str, notification_id: str) -> None:
    """RGW's ``DELETE /BUCKET?notification=ID`` (boto3 has no call for it; AWS has no such request)."""
    import requests  # noqa: PLC0415
    from botocore.auth import S3SigV4Auth  # noqa: PLC0415
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    creds = s3_credentials(settings.s3)
    url = f"{(settings.s3.endpoint_url or '').rstrip('/')}/{bucket}?notification={notification_id}"
    request = AWSRequest(method="DELETE", url=url)
    S3SigV4Auth(Credentials(creds.get("aws_access_key_id", ""), creds.get("aws_secret_access_key", "")),
              "s3", "default").add_auth(request)
    response = requests.delete(url, headers=dict(request.headers), timeout=30)
    if response.status_code not in (200, 204, 404):
        raise ConfigError(f"removing notification {notification_id} of bucket {bucket}: HTTP "
                          f"{response.status_code} {response.text[:300]}")


# -- AWS S3 -> SQS ----------------------------------------------------------------------------------------


def _sqs(settings: Settings, client: Any) -> Any:
    import boto3  # noqa: PLC0415

    region = client.meta.region_name or "us-east-1"
    return boto3.client("sqs", endpoint_url=settings.s3.endpoint_url, region_name=region,
                        **s3_credentials(settings.s3))


def _others(client: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """The bucket's notification configuration without stacdrop's entry: AWS replaces the whole
    configuration on every write, so what others configured is written back with ours."""
    current = client.get_bucket_notification_configuration(Bucket=bucket)
    return {k: [c for c in v if c.get("Id") != NOTIFICATION_ID] for k, v in current.items()
            if k in ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")}


def _aws_setup(settings: Settings, client: Any, bucket: str, prefix: str) -> Wiring:
    sqs = _sqs(settings, client)
    name = (settings.s3.events_sqs or "").rstrip("/").rsplit("/", 1)[-1] or f"stacdrop-{bucket}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "stacdrop-bucket-events", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}}}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    config: dict[str, Any] = {"Id": NOTIFICATION_ID, "QueueArn": arn, "Events": EVENTS}
    if prefix:
        config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    kept = _others(client, bucket)
    kept["QueueConfigurations"] = [*kept.get("QueueConfigurations", []), config]
    client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=kept)
    wiring = _aws_show(settings, client, bucket, prefix)
    wiring.details["queue_url"] = url
    wiring.details["set"] = f"s3_events_sqs = {url!r} (STACDROP_S3_EVENTS_SQS)"
    return wiring


def _aws_show(_settings: Settings, client: Any, bucket: str, prefix: str) -> Wiring:
    found = client.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations", [])
    ours = [c for c in found if c.get("Id") == NOTIFICATION_ID]
    wiring = Wiring(Flavour.AWS, bucket, prefix)
    if ours:
        wiring.target = ours[0]["QueueArn"]
        wiring.details["events"] = ours[0].get("Events", [])
    return wiring


def _aws_remove(settings: Settings, client: Any, bucket: str, prefix: str) -> Wiring:
    wiring = _aws_show(settings, client, bucket, prefix)
    kept = _others(client, bucket)
    client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        k: v for k, v in kept.items() if v})
    return wiring  # the queue is left: it may hold events not yet read, and other buckets may use it


# -- MinIO --------------------------------------------------------------------------------------------------


def _minio_commands(settings: Settings, bucket: str, prefix: str) -> Wiring:
    amqp_url = redact_url(events_amqp_url(settings), keep_user=True)
    exchange, kind = settings.s3.events_exchange, settings.s3.events_exchange_type
    routing = topic_name(settings, bucket)
    event_filter = f" --prefix {prefix}" if prefix else ""
    wiring = Wiring(Flavour.MINIO, bucket, prefix, target="arn:minio:sqs::stacdrop:amqp")
    wiring.commands = [
        f"mc admin config set ALIAS notify_amqp:stacdrop url='{amqp_url}' exchange={exchange} "
        f"exchange_type={kind} routing_key={routing} durable=on delivery_mode=2 "
        "queue_dir=/data/.minio-events  # put the real password where the URL shows ***",
        "mc admin service restart ALIAS",
        f"mc event add ALIAS/{bucket} arn:minio:sqs::stacdrop:amqp --event put,delete{event_filter}",
    ]
    wiring.details["set"] = f"s3_events_routing_key = {routing!r} (or '#')"
    return wiring


# -- the three operations -----------------------------------------------------------------------------------


def _dispatch(settings: Settings, operation: str, flavour: Flavour | None) -> Wiring:
    bucket, prefix = inbox_bucket(settings)
    client = s3_client(settings.s3)
    try:
        flavour = flavour or detect_flavour(settings, client, bucket)
        if flavour is Flavour.MINIO:
            if operation == "setup":
                return _minio_commands(settings, bucket, prefix)
            wiring = Wiring(Flavour.MINIO, bucket, prefix)
            wiring.commands = [f"mc event {'list' if operation == 'show' else 'remove'} ALIAS/{bucket} "
                               "arn:minio:sqs::stacdrop:amqp"]
            return wiring
        handlers = {(Flavour.CEPH, "setup"): _ceph_setup, (Flavour.CEPH, "show"): _ceph_show,
                    (Flavour.CEPH, "remove"): _ceph_remove, (Flavour.AWS, "setup"): _aws_setup,
                    (Flavour.AWS, "show"): _aws_show, (Flavour.AWS, "remove"): _aws_remove}
        return handlers[(flavour, operation)](settings, client, bucket, prefix)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - boto3, botocore, pika: each told as one clear config error
        problem = classify_s3_error(exc)
        reason = problem.reason if problem else f"{type(exc).__name__}: {exc}"
        raise ConfigError(redact_text(f"s3 notifications {operation} on bucket {bucket}: {reason}")) from None


def setup(settings: Settings, flavour: Flavour | None = None) -> Wiring:
    return _dispatch(settings, "setup", flavour)


def show(settings: Settings, flavour: Flavour | None = None) -> Wiring:
    return _dispatch(settings, "show", flavour)


def remove(settings: Settings, flavour: Flavour | None = None) -> Wiring:
    return _dispatch(settings, "remove", flavour)
