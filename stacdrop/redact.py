"""Secrets never leave the process: the one place that decides what a secret looks like and masks it.

Everything stacdrop writes where someone else can read it passes through here: log lines (the structlog
chain and the stdlib handlers, stacdrop/logs.py), ``stacdrop config``, job errors and events (the ledger
and the dead letters, stacdrop/ledger.py and stacdrop/runtime.py), and every JSON or text answer of the
API (/status ``_param``, /jobs, /dead-letters, /metrics, the status page's data: stacdrop/app/api/redaction.py).

Two ways to recognise a secret, used together:

- by shape, whatever its value: the user info and the query string of any URL (``redact_url`` shows
  ``scheme://host/path?...``; ``stacdrop config`` shows the operator ``user:***@`` and the query's names),
  known signature and token parameters (``X-Amz-Signature=``, ``sig=``, ``token=``, ...) anywhere in a
  text, and ``Bearer``/``Basic`` credentials;
- by value: the secret settings (``secrets_of(settings)``: tokens, secret keys, URL passwords), masked
  wherever they occur, raw or percent-encoded. Values shorter than ``MIN_SECRET_LENGTH`` are not masked
  by value (they would mangle unrelated words); their URLs are still masked by shape.

User info is found the way a careless config writes it, not the way RFC 3986 parses it: a password may
hold ``/``, ``@``, ``:`` or ``?`` unescaped, so everything between ``://`` and the *last* ``@`` counts as
user info. A URL whose path or query holds an ``@`` is masked more than needed; it never leaks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_SECRET_LENGTH = 6

# Query (or free-text) parameters whose value is a credential or a signature: AWS SigV4 and SigV2
# presigned URLs, Google Cloud Storage signed URLs, Azure SAS, and the usual token names.
SENSITIVE_PARAMS = (
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId", "Signature",
    "X-Goog-Signature", "X-Goog-Credential", "GoogleAccessId", "sig", "token", "access_token", "id_token",
    "refresh_token", "api_key", "apikey", "password", "passwd", "pwd", "secret", "client_secret",
)
# Fields of Settings whose value identifies rather than protects: masked in `stacdrop config`, but not
# searched for in free text (an access key id like "test" or "minio" would mask every such word).
IDENTIFIERS = ("aws_access_key_id", "access_key_id")  # the S3 key id: shown in logs as AWS does

TRAILING_PUNCTUATION = ".,;:!?'\")]}>"
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s]*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.*)", re.DOTALL)
_PARAM = re.compile(
    r"(?<![A-Za-z0-9_\-])(" + "|".join(re.escape(p) for p in SENSITIVE_PARAMS) + r")=([^&\s'\"<>,;:)\]}]+)",
    re.IGNORECASE,
)
# A credential after Bearer/Basic: 8+ token characters with a digit or a symbol ("Basic auth" is prose).
_AUTH = re.compile(r"\b(Bearer|Basic)\s+(?=[A-Za-z]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
_CONNINFO_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def _mask_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, sep, _value = item.partition("=")
        parts.append(f"{name}={MASK}" if sep else (MASK if item else ""))
    return "&".join(parts)


def redact_url(url: str, *, keep_user: bool = False) -> str:
    """``url`` as anyone may see it: no user info, no query string (``?...`` says there was one), no
    fragment. Any scheme; never raises; a string without ``scheme://`` comes back as is.

    ``keep_user``: the operator's view (``stacdrop config``, ``stacdrop health``): the user name stays
    with the password masked (a user info without a password is masked whole: it is usually a token), and
    the query's parameter names stay with their values masked."""
    match = _SCHEME.fullmatch(url)
    if match is None:
        return url
    scheme, rest = match.groups()
    shown_user = ""
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        # A user info holding '/', '?' or '#' means the password held them: show no part of it.
        plain_user = bool(colon) and not any(c in user for c in "/?#")
        shown_user = (f"{user}:{MASK}@" if plain_user else f"{MASK}@") if keep_user else ""
        rest = after
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i != -1), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    shown = f"{scheme}://{shown_user}{authority}{path}"
    if question:
        shown += "?" + (_mask_query(query) if keep_user else "...")
    if hash_ and keep_user:
        shown += "#" + (MASK if fragment else "")
    return shown


def redact_setting(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A settings value as ``stacdrop config`` prints it: URLs in the operator's view (``keep_user``),
    secrets masked by value, recursively through tables and lists."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        if _SCHEME.fullmatch(value):  # the whole value is one URL, even with a space in its password
            return _mask_values(redact_url(value, keep_user=True), secrets)
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: redact_setting(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_setting(v, secrets) for v in value]
    return value


@functools.lru_cache(maxsize=64)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every way a secret may be written in a text: raw, percent-encoded (either case), form-encoded."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            continue
        for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")):
            forms.add(form)
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), form))
    return tuple(sorted(forms, key=len, reverse=True))  # longest first: no half-masked leftovers


def _mask_values(text: str, secrets: tuple[str, ...]) -> str:
    for form in _forms(secrets):
        text = text.replace(form, MASK)
    return text


def _redact_url_in_prose(match: re.Match[str]) -> str:
    """A URL runs to the next space; punctuation at its end belongs to the sentence ("...?sig=x: denied")."""
    url = match.group(0)
    bare = url.rstrip(TRAILING_PUNCTUATION)
    return redact_url(bare) + url[len(bare):]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets`` (by value, raw or percent-encoded), every URL's user info and query
    values, known signature/token parameters and Bearer/Basic credentials masked."""
    if not text:
        return text
    text = _mask_values(text, tuple(secrets))  # first: a secret holding a space would split the URL below
    text = _URL.sub(_redact_url_in_prose, text)
    text = _PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _AUTH.sub(lambda m: f"{m.group(1)} {MASK}", text)


def redact_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``redact_text`` on every string of a JSON-like value (dict keys and values, lists, tuples)."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {redact_data(k, secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_data(v, secrets) for v in value)
    return value


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` as written and decoded (or the whole user info when it has no password)."""
    match = _SCHEME.fullmatch(url.strip())
    if match is None:
        return []
    userinfo, at, _host = match.group(2).rpartition("@")
    if not at or not userinfo:
        return []
    _user, colon, password = userinfo.partition(":")
    written = password if colon else userinfo
    # Clients parse such a URL at the first '/', '?', '#' or '@' and print the pieces in their errors
    # ("'stacuser:longprefix' is not a valid host or port"): each piece is a secret too.
    pieces = [p for p in re.split(r"[/?#@]", written) if len(p) >= MIN_SECRET_LENGTH]
    return [s for s in dict.fromkeys((written, unquote(written), *pieces)) if s]


def _setting_values(model: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(field name, value)`` of a settings model and of its sections."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, BaseModel):
            yield from _setting_values(value)
        else:
            yield name, value


def secrets_of(settings: Any) -> tuple[str, ...]:
    """The values to mask wherever they appear: every secret setting (tokens, secret keys, the catalog
    DSN and its password) and the password of every URL setting (broker, ledger, stac, store, ...)."""
    found: list[str] = []
    for name, value in _setting_values(settings):
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            if name not in IDENTIFIERS:
                found.append(raw)
            found.extend(url_secrets(raw))
            found.extend(m.group(1).strip("'") for m in _CONNINFO_PASSWORD.finditer(raw))
        elif isinstance(value, str) and "://" in value:
            found.extend(url_secrets(value))
    return tuple(dict.fromkeys(s for s in found if s))
