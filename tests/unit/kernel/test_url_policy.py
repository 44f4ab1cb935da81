"""The source URL policy against real HTTP servers on 127.0.0.1: one plays a public host (``localhost``,
allow-listed as an operator lists a file host by name), one an internal service that must never be hit.

Shown for the processor's GET (``fetch_source``) and the API's HEAD (``POST /jobs`` to ``stacdrop serve``
as a subprocess): authorities that parsers read differently (a backslash before '@'), redirects to internal
hosts, other schemes and presigned URLs, DNS rebinding (a resolver hook: the only fake here), ports in
``allowed_hosts``, and, by property, that whatever the policy accepts is where the HTTP client connects.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError
from urllib3.util import parse_url

import processor.fetch as fetch
from processor.errors import SourceUnavailable
from processor.fetch import fetch_source
from stacdrop.config import Settings
from stacdrop.errors import PermanentError
from stacdrop.urls import UnsafeURL, check_source_url
from stacdrop.app.components import processor_settings
from tests.support.api_server import ApiServer
from tests.support.daemon import base_env
from tests.support.http_server import LocalHttpServer, QuietHandler

SECRETS = ("pa55word", "s3cretsig", "X-Amz", "AKIAUSER")
INTERNAL_BODY = b"INTERNAL-ONLY: loopback service"
PUBLIC_BODY = b"II*\x00public raster bytes"
# Public-looking (is_global): what a rebinding DNS server answers while it is being checked. Nothing listens
# on the test's port there, so a connection pinned to it fails at once.
PUBLIC_LOOKING = "192.88.99.1"


class Recorder(LocalHttpServer):
    """A host on 127.0.0.1 that records every request (method, path, Host header) and serves one file,
    404s, and the redirects it is told."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.seen: list[tuple[str, str, str]] = []
        self.redirects: dict[str, str] = {}
        super().__init__(_Recording)


class _Recording(QuietHandler):
    server: Recorder

    def _answer(self, with_body: bool) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Host", "")))
        path = self.path.split("?", 1)[0]
        if path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[path])
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if not path.endswith("/a.tif"):  # any such path: what a confused client asks for is served, and seen
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if with_body:
            self.wfile.write(self.server.body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)


@pytest.fixture(scope="module")
def internal() -> Iterator[Recorder]:
    with Recorder(INTERNAL_BODY) as server:
        yield server


@pytest.fixture(scope="module")
def public(internal: Recorder) -> Iterator[Recorder]:
    with Recorder(PUBLIC_BODY) as server:
        pi, pp = internal.port, server.port
        server.redirects = {
            "/to/backslash": f"http://127.0.0.1:{pi}\\@localhost:{pp}/a.tif",
            "/to/internal-presigned": f"http://AKIAUSER:pa55word@127.0.0.1:{pi}/a.tif?X-Amz-Signature=s3cretsig",
            "/to/ambiguous-presigned": f"http://AKIAUSER:pa55word\\@localhost:{pp}/a.tif?X-Amz-Signature=s3cretsig",
            "/to/no-host-presigned": f"http://\\@localhost:{pp}/a.tif?X-Amz-Signature=s3cretsig",
            "/to/file": "file:///etc/passwd",
            "/to/gopher": f"gopher://127.0.0.1:{pi}/_GET%20/a.tif?X-Amz-Signature=s3cretsig",
            "/to/public": "/a.tif",
        }
        yield server


@pytest.fixture(autouse=True)
def clean_slate(internal: Recorder, public: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    internal.seen.clear()
    public.seen.clear()
    monkeypatch.setattr(fetch, "BACKOFF", 0.01)


def fetched(url: str, tmp_path: Path, settings: Settings) -> bytes:
    with fetch_source(url, tmp_path, processor_settings(settings).access) as local:
        return Path(local).read_bytes()


def assert_clean(message: str) -> None:
    """No user info, no query string, no signature in an error."""
    for secret in SECRETS:
        assert secret not in message, message
    assert "?" not in message.replace("?...", ""), message


BY_NAME = Settings(allowed_hosts=["localhost"])  # the public host, listed by name, any port

# Authorities that urllib.parse reads as the part after '@' and requests/urllib3 as the part before the
# backslash. Each was fetched from the internal service before the policy parsed the URL once.
BACKSLASH = [
    (["localhost"], "http://127.0.0.1:{pi}\\@localhost:{pp}/a.tif"),
    (["localhost"], "http://user:pw@127.0.0.1:{pi}\\@localhost:{pp}/a.tif"),
    (["localhost"], "http://127.0.0.1:{pi}\\\\@localhost:{pp}/a.tif"),
    (["127.0.0.1"], "http://localhost:{pi}\\@127.0.0.1:{pp}/a.tif"),  # an allow-list by address
]


@pytest.mark.parametrize(("allowed", "template"), BACKSLASH)
def test_backslash_authority_never_reaches_the_internal_service(internal: Recorder, public: Recorder,
                                                                tmp_path: Path, allowed: list[str],
                                                                template: str) -> None:
    url = template.format(pi=internal.port, pp=public.port)
    with pytest.raises(UnsafeURL, match="backslash") as err:
        fetched(url, tmp_path, Settings(allowed_hosts=allowed))
    assert not err.value.transient
    assert "pw" not in str(err.value)
    assert internal.seen == [] and public.seen == []


@pytest.mark.parametrize("path", ["/to/backslash", "/to/internal-presigned", "/to/ambiguous-presigned",
                                  "/to/no-host-presigned", "/to/file", "/to/gopher"])
def test_redirect_hops_are_checked(internal: Recorder, public: Recorder, tmp_path: Path, path: str) -> None:
    with pytest.raises(PermanentError) as err:
        fetched(f"http://localhost:{public.port}{path}", tmp_path, BY_NAME)
    assert isinstance(err.value, UnsafeURL), repr(err.value)
    assert_clean(str(err.value))
    assert [p for _, p, _ in public.seen] == [path]  # the chain started at the public host ...
    assert internal.seen == []  # ... and never went on to the internal one


def test_a_checked_redirect_is_followed_with_the_host_name_kept(public: Recorder, tmp_path: Path) -> None:
    assert fetched(f"http://localhost:{public.port}/to/public", tmp_path, BY_NAME) == PUBLIC_BODY
    # Connected to the checked address, but the request names the host (virtual hosts, TLS SNI).
    assert public.seen == [("GET", "/to/public", f"localhost:{public.port}"),
                           ("GET", "/a.tif", f"localhost:{public.port}")]


def test_allowed_hosts_entries_with_a_port(internal: Recorder, public: Recorder, tmp_path: Path) -> None:
    only_public = Settings(allowed_hosts=[f"127.0.0.1:{public.port}"])
    assert fetched(f"http://127.0.0.1:{public.port}/a.tif", tmp_path, only_public) == PUBLIC_BODY
    with pytest.raises(UnsafeURL, match=f"127.0.0.1:{internal.port} is not on allowed_hosts"):
        fetched(f"http://127.0.0.1:{internal.port}/a.tif", tmp_path, only_public)
    public.redirects["/to/internal-port"] = f"http://127.0.0.1:{internal.port}/a.tif"
    with pytest.raises(UnsafeURL, match="is not on allowed_hosts"):  # the same address, another port, by redirect
        fetched(f"http://127.0.0.1:{public.port}/to/internal-port", tmp_path, only_public)
    assert internal.seen == []
    by_name = Settings(allowed_hosts=[f"LOCALHOST:{public.port}", "[::1]:8080", "::2"])
    assert fetched(f"http://localhost:{public.port}/a.tif", tmp_path, by_name) == PUBLIC_BODY
    with pytest.raises(UnsafeURL, match="is not on allowed_hosts"):
        fetched(f"http://localhost:{internal.port}/a.tif", tmp_path, by_name)
    # A port entry names the effective port: the default one when the URL gives none.
    check_source_url("http://127.0.0.1/x.tif", Settings(allowed_hosts=["127.0.0.1:80"]).limits.allowed_hosts)
    with pytest.raises(UnsafeURL, match="127.0.0.1:443 is not on allowed_hosts"):
        check_source_url("https://127.0.0.1/x.tif", Settings(allowed_hosts=["127.0.0.1:80"]).limits.allowed_hosts)
    assert internal.seen == []


def test_allowed_hosts_entries_are_validated() -> None:
    for bad in ("http://data.example.org", "data.example.org/path", "user@data.example.org", "host:0",
                "host:99999", "host:", "[::1", "a b"):
        with pytest.raises(ValidationError, match="allowed_hosts"):
            Settings(allowed_hosts=[bad])


# -- TLS: connected to the checked address, the certificate checked against the name -----------------


def _tls_files(tmp_path: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A test CA (file) and a server certificate and key for ``names``, signed by it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stacdrop test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.mark.parametrize(("names", "accepted"), [(["localhost"], True), (["other.example"], False)])
def test_tls_pinned_to_the_address_checked_against_the_name(tmp_path: Path, names: list[str], accepted: bool) -> None:
    import ssl

    from stacdrop.urls import PinnedAdapter

    ca, cert, key = _tls_files(tmp_path, names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    with Recorder(PUBLIC_BODY) as server:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        checked = check_source_url(f"https://localhost:{server.port}/a.tif", BY_NAME.limits.allowed_hosts)
        assert checked.addresses == ("127.0.0.1",)
        adapter = PinnedAdapter()
        adapter.pin(checked, "127.0.0.1")
        request = requests.Request("GET", checked.url).prepare()
        if accepted:
            resp = adapter.send(request, verify=str(ca), timeout=10)
            assert resp.status_code == 200 and resp.content == PUBLIC_BODY
            assert server.seen == [("GET", "/a.tif", f"localhost:{server.port}")]
        else:  # a certificate for another name: refused, although the address is the checked one
            with pytest.raises(requests.exceptions.SSLError):
                adapter.send(request, verify=str(ca), timeout=10)
            assert server.seen == []
        assert sni[:1] == ["localhost"]  # SNI names the host, not the address connected to
        adapter.close()


# -- DNS rebinding ------------------------------------------------------------------------------------


class RebindingResolver:
    """``socket.getaddrinfo`` for one name, as a rebinding DNS server with TTL 0 answers it: a public-looking
    address the first ``first`` times, 127.0.0.1 after. Other names and address literals resolve as usual."""

    def __init__(self, name: str, first: int) -> None:
        self.name = name
        self.first = first
        self.queries = 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if (host.decode() if isinstance(host, bytes) else host) != self.name:
            return self.real(host, port, *args, **kwargs)
        self.queries += 1
        answer = PUBLIC_LOOKING if self.queries <= self.first else "127.0.0.1"
        return self.real(answer, port, *args, **kwargs)


@pytest.mark.parametrize("first", [1, 2, 3])
def test_dns_rebinding_processor(internal: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 first: int) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("rebind.example", first))
    monkeypatch.setattr(fetch, "TIMEOUT", (3, 5))
    with pytest.raises((UnsafeURL, SourceUnavailable)) as err:
        fetched(f"http://rebind.example:{internal.port}/a.tif", tmp_path, Settings())
    assert internal.seen == []
    if isinstance(err.value, SourceUnavailable):  # every attempt went to the address that was checked
        assert f"at {PUBLIC_LOOKING}" in str(err.value), str(err.value)
    else:
        assert "resolves to 127.0.0.1" in str(err.value)


@pytest.mark.parametrize("first", [1, 2])
def test_dns_rebinding_api_head(internal: Recorder, monkeypatch: pytest.MonkeyPatch, first: int) -> None:
    from fastapi import HTTPException

    from stacdrop.app.api.submit import head_source

    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("rebind.example", first))
    with pytest.raises(HTTPException) as err:
        head_source(f"http://rebind.example:{internal.port}/a.tif", Settings())
    assert err.value.status_code in (422, 502), err.value.detail
    assert internal.seen == []


# -- the API (stacdrop serve as a subprocess) --------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api")
    env = base_env(root, STACDROP_API_TOKEN="url-policy-token", STACDROP_ALLOWED_HOSTS="localhost",
                   STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True}}))
    server = ApiServer(root, env).start()
    yield server
    server.stop()


def job_count(api: ApiServer) -> int:
    return len(api.get("/jobs").json()["jobs"])


def test_api_refuses_what_the_processor_refuses(api: ApiServer, internal: Recorder, public: Recorder) -> None:
    pi, pp = internal.port, public.port
    before = job_count(api)
    refused = [t.format(pi=pi, pp=pp) for allowed, t in BACKSLASH if allowed == ["localhost"]]
    refused += [f"http://localhost:{pp}/to/backslash", f"http://localhost:{pp}/to/ambiguous-presigned",
                f"http://localhost:{pp}/to/internal-presigned", f"http://localhost:{pp}/to/gopher"]
    for url in refused:
        resp = api.post("/jobs", {"source": url, "collection": "chelsa"})
        assert resp.status_code == 422, (url, resp.status_code, resp.text)
        assert "refused" in resp.json()["detail"], resp.text
        assert_clean(resp.json()["detail"])
    assert internal.seen == []
    assert job_count(api) == before
    # The same API, the same policy, a source on the public host: HEAD pinned to the checked address.
    ok = api.post("/jobs", {"source": f"http://localhost:{pp}/to/public", "collection": "chelsa"})
    assert ok.status_code in (200, 201, 202), ok.text
    assert ("HEAD", "/a.tif", f"localhost:{pp}") in public.seen
    assert job_count(api) == before + 1
    assert internal.seen == []


# -- properties: what the policy approves is where the client connects --------------------------------

PIECES = ["localhost", "127.0.0.1", "127.0.0.2", "127.0.0.3", "public.example", "[::1]", "[::ffff:127.0.0.1]",
          ":8080", ":80", ":", "@", "\\", "/", "%", "%2e", "%40", "[", "]", "#", "?", " ", "\t", ".", "-", "user",
          "pw", "é", "ß", "．", "。", "\u3000", "İ", "xn--", "0x7f", "1", "0", "*"]
noise = st.sampled_from(PIECES) | st.text(st.characters(codec="utf-8"), max_size=2)
# Free mixes of the pieces, and [junk][@][junk]host[junk][:port], which the policy accepts more often.
hosts = st.sampled_from(["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "127.0.0.3", "[::1]", "bücher.example"])
ports = st.sampled_from(["", ":8080", ":80", ":443", ":0", ":08080", ":65536"])
# Free mixes of the pieces, and [host or junk][separator][junk]host[junk][:port], where the userinfo/host
# confusions live and which the policy accepts often enough to test what it accepts.
authorities = st.lists(noise, max_size=8).map("".join) | st.tuples(
    hosts | st.lists(noise, max_size=3).map("".join), ports, st.sampled_from(["", "@", "\\@", "\\", "user:pw@"]),
    st.lists(noise, max_size=2).map("".join), hosts, st.lists(noise, max_size=2).map("".join), ports,
).map("".join)
source_urls = st.builds(lambda scheme, authority, rest: f"{scheme}://{authority}{rest}",
                        st.sampled_from(["http", "https", "HTTP"]), authorities,
                        st.sampled_from(["", "/a.tif", "/x?y=1", "#f", "/\\@127.0.0.1/"]))
# Listed names and literals only: anything else is refused before the resolver is asked, so no DNS.
POLICY = Settings(allowed_hosts=["localhost", "127.0.0.2", "127.0.0.3:8080"])
PERMITTED = {("localhost", None), ("127.0.0.2", None), ("127.0.0.3", 8080)}
DEFAULT_PORT = {"http": 80, "https": 443}


def client_target(url: str) -> tuple[str, int]:
    """Host and port requests connects to for ``url``: its prepared URL, read by its own parser."""
    prepared = requests.Request("GET", url).prepare().url
    assert prepared is not None
    parsed = parse_url(prepared)
    assert parsed.host and parsed.scheme
    # requests picks the connection pool by urllib.parse of the prepared URL: it must read the same.
    split = urlsplit(prepared)
    host = parsed.host.strip("[]")
    port = parsed.port or DEFAULT_PORT[parsed.scheme]
    assert (split.hostname, split.port or DEFAULT_PORT[parsed.scheme]) == (host, port)
    return host, port


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source_urls)
def test_property_approved_is_where_the_client_connects(url: str) -> None:
    try:
        checked = check_source_url(url, POLICY.limits.allowed_hosts)
    except UnsafeURL:
        return
    host, port = client_target(url)
    host = host.rstrip(".")  # 'localhost.' is the same name as 'localhost'
    assert (host, port) in PERMITTED or (host, None) in PERMITTED, (url, host, port)
    assert (host, port) == (checked.host.rstrip("."), checked.port), url
    assert client_target(checked.url) == (checked.host, port)  # the URL requested is the one that was approved
    from stacdrop.urls import PinnedAdapter

    adapter = PinnedAdapter()
    adapter.pin(checked, checked.addresses[0])
    request = requests.Request("GET", checked.url).prepare()
    params, pool = adapter.build_connection_pool_key_attributes(request, True)
    assert (params["host"], params["port"]) == (checked.addresses[0], port)
    if checked.scheme == "https":  # TLS: SNI and the certificate check on the name, not the address
        assert pool["server_hostname"] == pool["assert_hostname"] == checked.host


@hsettings(max_examples=300, deadline=None)
@given(source_urls)
def test_property_parsed_once_as_the_client_parses(url: str) -> None:
    from stacdrop.urls import parse_source_url

    try:
        parsed = parse_source_url(url)
    except UnsafeURL as exc:
        assert_clean(str(exc))
        return
    assert parsed.host.isascii() and "\\" not in re.split(r"[/?#]", url.split("//", 1)[1], maxsplit=1)[0]
    assert client_target(url) == (parsed.host, parsed.port), url
    assert client_target(parsed.url) == (parsed.host, parsed.port), url
