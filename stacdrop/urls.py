"""Source URLs: which may be fetched, and the one way stacdrop fetches them over HTTP (no SSRF).

A check that reads a URL one way while the HTTP client reads it another checks nothing. With a backslash in
the authority, ``http://127.0.0.1:8000\\@public.example/`` was checked as public.example (urllib.parse) and
fetched from 127.0.0.1 (requests). A check that resolves the host, then a client that resolves it again, is
beaten by a DNS server that answers differently the second time (DNS rebinding). So, here and only here:

1. **Parsed once.** ``parse_source_url`` parses with urllib3's ``parse_url``, the parser requests itself
   uses, and refuses what parsers read differently: a backslash, white space or a control character in the
   authority, more than one '@', a '%' in the host, an empty host or port, a host that is not a DNS name, a
   dotted-quad IPv4 address or a bracketed IPv6 address (no zone id; ``127.1`` or ``0x7f.1`` are refused),
   and non-ASCII that IDNA cannot encode. The canonical form of that parse (``SourceURL.url``) is what is
   requested, and requests, preparing it, must read the same host and port or the URL is refused.
2. **Checked where the connection is made.** ``check_source_url`` resolves the host once and checks every
   address. ``PinnedAdapter`` (a requests transport adapter) connects to one of those addresses and nothing
   else, with the Host header, TLS SNI and the certificate check on the host name.
3. **At every hop.** ``open_source_url`` follows redirects itself, at most ``MAX_REDIRECTS``, each hop through
   1 and 2. The API's HEAD (stacdrop/app/api/submit.py) and the processor's GET (processor/fetch.py) both use it.

The policy (the ``allowed_hosts`` setting, ``[limits]``):
- schemes http, https and s3 only, at every hop; a redirect to s3:// is not followed;
- an empty list: any host whose every address is public. Loopback, link-local (169.254/16, fe80::/10, where
  cloud metadata services live), unspecified, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
  (100.64/10), multicast and reserved addresses are refused, also inside IPv4-mapped and 6to4 addresses;
- a non-empty list: listed hosts only, whatever they resolve to (the operator vouches for them), still
  pinned to the addresses resolved by the check. ``host`` matches every port, ``host:port`` (``[v6]:port``)
  that port only, compared with the URL's effective port (80 or 443 when it names none);
- ``s3://`` URLs go to the configured S3 endpoint, so the bucket is all they choose.

Refusals are ``UnsafeURL`` (permanent). Messages show URLs through ``redact_url``: no password, no query value.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

from stacdrop.errors import ConfigError, HostUnreachable, TooManyRedirects, UnsafeURL
from stacdrop.redact import redact_url  # the one redaction home; re-exported for importers of stacdrop.urls

__all__ = [
    "MAX_REDIRECTS", "SCHEMES", "AllowedHost", "CheckedURL", "PinnedAdapter", "SourceURL", "UnsafeURL",
    "check_source_url", "open_source_url", "parse_allowed_host", "parse_source_url", "redact_url",
]

SCHEMES = ("http", "https", "s3")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 5

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AUTHORITY = re.compile(r"[^/?#\\]*")  # urllib3's authority: it ends at a backslash, urllib.parse's does not
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def _shown(url: str) -> str:
    """The URL as an error may show it (``stacdrop.redact.redact_url`` never raises, whatever the URL)."""
    return redact_url(url)


@dataclass(frozen=True)
class SourceURL:
    """A source URL as the policy parsed it: what is requested, and the host and port it names."""

    url: str  # canonical (no fragment): what the client requests. s3: the URL as given
    scheme: str  # lower case
    host: str  # lower-case ASCII (IDNA), IPv6 without brackets. s3: the bucket
    port: int  # effective: 80 or 443 when the URL names none. s3: 0

    @property
    def authority(self) -> str:
        """``host[:port]`` as a Host header names it: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"

    @property
    def shown(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class CheckedURL(SourceURL):
    """A source URL the policy accepts, with the addresses a connection may go to (resolver order)."""

    addresses: tuple[str, ...] = ()


def _refuse(url: str, why: str) -> UnsafeURL:
    return UnsafeURL(f"{_shown(url)}: {why}")


def parse_source_url(url: str) -> SourceURL:
    """Parse ``url`` once, as the HTTP client will; raise ``UnsafeURL`` for another scheme or an ambiguous
    authority (see the module docstring). No DNS, no settings: that is ``check_source_url``."""
    if _CONTROL.search(url) or url != url.strip():
        raise _refuse(url, "control characters or surrounding white space in the URL")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if match is None or scheme not in SCHEMES:
        raise _refuse(url, f"scheme {scheme[:16] or '(none)'!r} is not allowed (http, https, s3)")
    rest = url[match.end():]
    if not rest.startswith("//"):
        raise _refuse(url, f"'{scheme}:' must be followed by '//' and the host")
    if scheme == "s3":
        bucket = rest[2:].partition("/")[0]
        if not bucket:
            raise _refuse(url, "no bucket")
        return SourceURL(url=url, scheme="s3", host=bucket, port=0)
    authority = _AUTHORITY.match(rest, 2).group()  # type: ignore[union-attr]  # matches the empty string
    if rest[2 + len(authority):].startswith("\\"):
        raise _refuse(url, "a backslash in the host part (some parsers end the host there, others do not)")
    if any(c.isspace() for c in authority):
        raise _refuse(url, "white space in the host part")
    if authority.count("@") > 1:
        raise _refuse(url, "more than one '@' in the host part")
    host_port = authority.rpartition("@")[2]
    if "%" in host_port:
        raise _refuse(url, "a percent-escape in the host")
    if host_port.endswith(":"):
        raise _refuse(url, "an empty port")
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError):  # an invalid host, port or IDNA label
        raise _refuse(url, "not a valid host or port") from None
    if not parsed.host:
        raise _refuse(url, "no host")
    port = DEFAULT_PORTS[scheme] if parsed.port is None else parsed.port
    if not 0 < port < 65536:
        raise _refuse(url, f"port {port} is out of range")
    host = _plain_host(parsed.host, url)
    canonical = Url(scheme=scheme, auth=parsed.auth, host=parsed.host, port=parsed.port,
                    path=parsed.path or "/", query=parsed.query).url
    if _client_target(url, canonical) != (host, port):
        raise _refuse(url, "the HTTP client reads this URL differently")
    return SourceURL(url=canonical, scheme=scheme, host=host, port=port)


def _plain_host(host: str, url: str) -> str:
    """The host urllib3 parsed, if it is a DNS name, a dotted quad or an IPv6 address; without brackets."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _refuse(url, "not a valid IPv6 address") from None
        return host[1:-1]
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        # The resolver reads numbers in many forms (127.1, 0x7f.1, 2130706433, 0177.0.0.1): dotted quads only.
        try:
            if str(ipaddress.IPv4Address(host)) == host:
                return host
        except ValueError:
            pass
        raise _refuse(url, "a numeric host that is not an IPv4 address in dotted-quad form")
    if not host.isascii() or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _refuse(url, "not a valid host name")
    return host


def _client_target(url: str, canonical: str) -> tuple[str, int]:
    """Host and port requests would connect to for ``canonical``: its prepared URL read by urllib3 and, as
    requests picks the connection pool, by urllib.parse. ``UnsafeURL`` when requests refuses the URL."""
    try:
        prepared = requests.Request("GET", canonical).prepare().url or ""
        ours, pools = parse_url(prepared), urlsplit(prepared)
        default = DEFAULT_PORTS.get(ours.scheme or "", 0)
        host, port = (ours.host or "").strip("[]"), ours.port or default
        if (pools.hostname, pools.port or default) != (host, port):
            raise _refuse(url, "the HTTP client reads this URL differently")
    except (requests.RequestException, LocationParseError, ValueError) as exc:  # e.g. user info not latin-1
        raise _refuse(url, f"the HTTP client cannot request this URL ({type(exc).__name__})") from None
    return host, port


# -- allowed_hosts --------------------------------------------------------------------------------------


def _host_key(host: str) -> str:
    """One spelling per host, to compare a URL's host with an allowed_hosts entry."""
    host = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


@dataclass(frozen=True)
class AllowedHost:
    """One ``allowed_hosts`` entry."""

    host: str  # as ``_host_key`` spells it
    port: int | None  # None: every port

    def matches(self, source: SourceURL) -> bool:
        return self.host == _host_key(source.host) and self.port in (None, source.port)


def parse_allowed_host(entry: str) -> AllowedHost:
    """``host``, ``host:port``, an IPv6 address, or ``[IPv6]:port``; ValueError naming the entry otherwise."""
    text = entry.strip()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    url = f"http://{text}/"
    try:
        source = parse_source_url(url)
        parsed = parse_url(url)
    except (UnsafeURL, LocationParseError, ValueError):
        parsed = None
    if parsed is None or parsed.auth or parsed.path != "/" or parsed.query is not None or parsed.fragment is not None:
        raise ValueError(f"allowed_hosts entry {entry!r} is not host, host:port, an IPv6 address or [IPv6]:port")
    return AllowedHost(host=_host_key(source.host), port=parsed.port)


def _allowed_hosts(entries: Sequence[str]) -> list[AllowedHost]:
    try:
        return [parse_allowed_host(entry) for entry in entries]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# -- the check ------------------------------------------------------------------------------------------


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            return _is_public(addr.ipv4_mapped)
        if addr.sixtofour is not None and not _is_public(addr.sixtofour):  # 2002:7f00:1:: embeds 127.0.0.1
            return False
    return not (
        addr.is_loopback
        or addr.is_link_local
        or addr.is_unspecified
        or addr.is_private
        or addr.is_multicast
        or addr.is_reserved
        or (isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED)
        or not addr.is_global
    )


def _resolve(source: SourceURL) -> tuple[str, ...]:
    """The addresses of ``source.host``, asked once: they are the only ones a connection may go to."""
    try:
        return (ipaddress.ip_address(source.host).compressed,)  # a literal: nothing to ask
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(source.host, source.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise UnsafeURL(f"{source.shown}: host {source.host} does not resolve ({why})") from None
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]
        if family in (socket.AF_INET, socket.AF_INET6) and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeURL(f"{source.shown}: host {source.host} has no IPv4 or IPv6 address")
    return tuple(addresses)


def check_source_url(url: str, allowed_hosts: Sequence[str] = ()) -> CheckedURL:
    """The policy on one URL (one hop): parsed once, ``allowed_hosts`` (the setting's entries), every
    resolved address checked. Returns what may be requested and the addresses to connect to; raises
    ``UnsafeURL`` (permanent)."""
    source = parse_source_url(url)
    if source.scheme == "s3":
        return CheckedURL(url=source.url, scheme=source.scheme, host=source.host, port=source.port)
    allowed = _allowed_hosts(allowed_hosts)
    listed = any(entry.matches(source) for entry in allowed)
    if allowed and not listed:
        key = _host_key(source.host)
        named = source.authority
        if any(entry.host == key for entry in allowed):  # listed for other ports: say which one was asked
            named = f"[{source.host}]:{source.port}" if ":" in source.host else f"{source.host}:{source.port}"
        raise UnsafeURL(f"{source.shown}: host {named} is not on allowed_hosts")
    addresses = _resolve(source)
    if not listed:
        for address in addresses:
            if not _is_public(ipaddress.ip_address(address)):
                raise UnsafeURL(
                    f"{source.shown}: host {source.host} resolves to {address}, a loopback, link-local or private "
                    "address (list the host in allowed_hosts to fetch from it)"
                )
    return CheckedURL(url=source.url, scheme=source.scheme, host=source.host, port=source.port,
                      addresses=addresses)


# -- the connection -------------------------------------------------------------------------------------


class PinnedAdapter(HTTPAdapter):
    """A requests transport adapter that connects to an address the policy checked, never to whatever the
    host name resolves to by then. The request still names the host: the Host header, TLS SNI and the
    certificate check (urllib3's ``server_hostname`` and ``assert_hostname``) use the name, not the address.
    A request for any other scheme, host or port than the pinned URL's is refused before a connection."""

    def __init__(self) -> None:
        super().__init__(max_retries=0)
        self._pinned: tuple[CheckedURL, str] | None = None

    def pin(self, target: CheckedURL, address: str) -> None:
        if address not in target.addresses:
            raise UnsafeURL(f"{target.shown}: {address} is not an address the policy checked")
        self._pinned = (target, address)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if self._pinned is None:
            raise UnsafeURL(f"{_shown(request.url or '')}: no checked address to connect to")
        target, address = self._pinned
        scheme = host_params["scheme"]
        asked = (scheme, host_params["host"], host_params["port"] or DEFAULT_PORTS.get(scheme))
        if asked != (target.scheme, target.host, target.port):
            raise UnsafeURL(f"{_shown(request.url or '')}: not the URL that was checked ({target.shown})")
        host_params["host"], host_params["port"] = address, target.port
        if scheme == "https":
            pool_kwargs["server_hostname"] = target.host
            pool_kwargs["assert_hostname"] = target.host
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **_kwargs: Any) -> None:
        if self._pinned is not None:
            request.headers["Host"] = self._pinned[0].authority


def _send(adapter: PinnedAdapter, target: CheckedURL, method: str, timeout: Any, stream: bool) -> requests.Response:
    """One request to ``target``, trying its checked addresses in order until one takes the connection."""
    request = requests.Request(method, target.url, headers=dict(requests.utils.default_headers())).prepare()
    error = "no address"
    for address in target.addresses:
        adapter.pin(target, address)
        try:
            return adapter.send(request, stream=stream, timeout=timeout, verify=True, proxies={})
        except requests.ConnectionError as exc:  # refused, unreachable, a connect timeout: the next address
            error = type(exc).__name__
        except requests.Timeout as exc:  # connected, then no answer: another address will not help
            reason = f"{target.host} at {address} did not answer in time ({type(exc).__name__})"
            raise HostUnreachable(f"{target.shown}: {reason}", reason=reason) from None
    at = "" if target.addresses == (target.host,) else f" at {', '.join(target.addresses)}"
    reason = f"cannot reach {target.host}{at} ({error})"
    raise HostUnreachable(f"{target.shown}: {reason}", reason=reason)


def _location(response: requests.Response) -> str:
    location = response.headers["Location"]
    try:  # as requests does: http.client decodes headers as latin-1, servers send UTF-8
        return location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return location


@contextmanager
def open_source_url(url: str, allowed_hosts: Sequence[str], method: str = "GET", *, timeout: Any,
                    stream: bool = False) -> Iterator[requests.Response]:
    """Request an http(s) ``url``, following redirects by hand, every hop checked (``check_source_url``)
    and its connection pinned to a checked address (``PinnedAdapter``). Yields the first answer that is not
    a redirect, whatever its status (the caller judges it), and closes it after. Raises ``UnsafeURL`` (a hop
    refused), ``TooManyRedirects`` (more than MAX_REDIRECTS) or ``HostUnreachable`` (transient)."""
    adapter = PinnedAdapter()
    response: requests.Response | None = None
    try:
        target = url
        for hop in range(MAX_REDIRECTS + 1):
            try:
                checked = check_source_url(target, allowed_hosts)
                if checked.scheme not in DEFAULT_PORTS:
                    raise UnsafeURL(f"{checked.shown}: {checked.scheme}:// is not fetched over HTTP")
            except UnsafeURL as exc:
                raise exc if hop == 0 else UnsafeURL(f"{_shown(url)} redirects to {exc}") from None
            response = _send(adapter, checked, method, timeout, stream)
            if not response.is_redirect:
                break
            target = urljoin(checked.url, _location(response))
            response.close()
            response = None
        else:
            raise TooManyRedirects(f"{_shown(url)}: more than {MAX_REDIRECTS} redirects")
        yield response
    finally:
        if response is not None:
            response.close()
        adapter.close()
