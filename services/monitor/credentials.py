"""The monitor's faust/aiokafka client gets the same security settings as the confluent-kafka
clients (aiokafka has its own names for them; librdkafka pass-through properties do not
apply to it)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

import faust
from aiokafka.abc import AbstractTokenProvider  # type: ignore[import-untyped]
from faust.types.auth import CredentialsT

from shared.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
    context.check_hostname = settings.kafka_ssl_verify_hostname
    if settings.kafka_ssl_certificate_location:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            settings.kafka_ssl_certificate_location,
            settings.kafka_ssl_key_location,
            password.get_secret_value() if password else None,
        )
    return context


class ClientCredentialsToken(AbstractTokenProvider):  # type: ignore[misc]
    """OAuth 2 client credentials, as librdkafka's `sasl.oauthbearer.method=oidc` gets
    them: one token, fetched again a minute before it expires."""

    def __init__(self, url: str, client_id: str, secret: str, scope: str | None) -> None:
        self._url = url
        self._form = {"grant_type": "client_credentials", "client_id": client_id}
        self._form["client_secret"] = secret
        if scope:
            self._form["scope"] = scope
        self._token: str | None = None
        self._expires = 0.0

    async def token(self) -> str:
        if self._token is None or time.time() > self._expires - 60:
            token, lifetime = await asyncio.to_thread(self._fetch)
            self._token, self._expires = token, time.time() + lifetime
            return token
        return self._token

    def _fetch(self) -> tuple[str, float]:
        body = urllib.parse.urlencode(self._form).encode()
        request = urllib.request.Request(self._url, body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer: dict[str, Any] = json.load(response)
        except OSError as exc:  # the body may echo the request: not shown
            raise RuntimeError(
                f"no OAuth token from HEADWATER_KAFKA_OAUTH_TOKEN_URL ({self._url}): "
                f"{type(exc).__name__}; check it and HEADWATER_KAFKA_OAUTH_CLIENT_ID/_SECRET"
            ) from None
        return str(answer["access_token"]), float(answer.get("expires_in", 300))


def faust_credentials(settings: Settings) -> CredentialsT | None:
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    if not protocol.startswith("SASL_"):
        return None
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        url, client, secret = (
            settings.kafka_oauth_token_url,
            settings.kafka_oauth_client_id,
            settings.kafka_oauth_client_secret,
        )
        if not (url and client and secret):  # Settings checks
            raise ValueError("OAUTHBEARER needs a token URL, client id and client secret")
        token = ClientCredentialsToken(
            url, client, secret.get_secret_value(), settings.kafka_oauth_scope
        )
        return faust.OAuthCredentials(oauth_cb=token, ssl_context=context)
    password = settings.kafka_sasl_password
    assert password is not None  # Settings checks
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )
