"""Which URLs a source may be fetched from: a submitted URL must not probe the internal network.

``check_source_url(url, settings)`` raises ``PermanentError`` unless:
- the scheme is http, https or s3 (local paths are checked where they are opened);
- for http(s): the host is on ``settings.allowed_hosts`` when that list is non-empty, and every address
  the host name resolves to is public: loopback, link-local (169.254.0.0/16, fe80::/10, where cloud
  metadata services live), unspecified, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10),
  multicast and reserved addresses are refused unless the host is listed in ``allowed_hosts`` by name.
- ``s3://`` URLs always go to the configured S3 endpoint, so the bucket name is the only thing they pick.

Redirects must be checked again (``check_source_url`` on every ``Location``): fetchers do that.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from stacdrop.errors import PermanentError

SCHEMES = ("http", "https", "s3")


class UnsafeURL(PermanentError):
    error_class = "unsafe_url"


def redact_url(url: str) -> str:
    """The URL without user info and query string (which may hold credentials or signatures)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (
        addr.is_loopback
        or addr.is_link_local
        or addr.is_unspecified
        or addr.is_private
        or addr.is_multicast
        or addr.is_reserved
        or (isinstance(addr, ipaddress.IPv4Address) and addr in ipaddress.ip_network("100.64.0.0/10"))
        or not addr.is_global
    )


def _host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == a.lower().rstrip(".") for a in allowed)


def resolve(host: str, port: int | None) -> list[str]:
    infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def check_source_url(url: str, settings: Any) -> None:
    """Raise ``UnsafeURL`` (permanent) if ``url`` may not be fetched; see the module docstring."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL(f"{shown}: not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"{shown}: scheme {scheme or '(none)'!r} is not allowed (http, https, s3)")
    if scheme == "s3":
        if not parts.netloc:
            raise UnsafeURL(f"{shown}: no bucket")
        return
    host = parts.hostname
    if not host:
        raise UnsafeURL(f"{shown}: no host")
    allowed = list(getattr(settings, "allowed_hosts", None) or [])
    listed = _host_allowed(host, allowed)
    if allowed and not listed:
        raise UnsafeURL(f"{shown}: host {host} is not on allowed_hosts")
    if listed:
        return  # explicitly trusted by the operator, whatever it resolves to
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
        except (socket.gaierror, UnicodeError) as exc:
            raise UnsafeURL(f"{shown}: host {host} does not resolve ({exc})") from None
    for addr in addresses:
        if not _is_public(addr):
            raise UnsafeURL(
                f"{shown}: host {host} resolves to {addr}, a loopback, link-local or private address "
                "(list the host in allowed_hosts to fetch from it)"
            )
