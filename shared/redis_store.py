"""Thin Redis adapter: connection with timeouts, TLS and credentials, health check, key
naming. The URL may hold a password: messages show it redacted."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from shared.settings import Settings


class RedisUnavailableError(RuntimeError):
    pass


def redacted(url: str) -> str:
    """The URL without its user and password, for messages: everything before the last "@"
    of the authority goes, so a password with an unencoded "@", ":" or "/" goes too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparseable Redis URL>"
    _, at, host = rest.rpartition("@")
    return f"{scheme}://***@{host}" if at else url


def _connect(url: str, timeout_s: float, **tls: Any) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **tls
    )


def redis_client(settings: Settings, timeout_s: float = 5.0) -> redis.Redis:
    """A client from HEADWATER_REDIS_URL and the TLS file settings."""
    url = settings.redis_url.get_secret_value()
    tls: dict[str, Any] = {}
    if url.startswith("rediss://"):
        files = {
            "ssl_ca_certs": settings.redis_ssl_ca_certs,
            "ssl_certfile": settings.redis_ssl_certfile,
            "ssl_keyfile": settings.redis_ssl_keyfile,
        }
        tls = {name: path for name, path in files.items() if path}
    try:
        return _connect(url, timeout_s, **tls)
    except ValueError as exc:
        if redacted(url) != url:  # the library's message may quote a piece of the password
            raise RedisUnavailableError(
                f"HEADWATER_REDIS_URL is not a Redis URL ({redacted(url)}): characters such "
                "as / # ? in the user or password must be percent-encoded (/ is %2F, # is "
                "%23, ? is %3F, @ is %40, : is %3A)"
            ) from None
        raise RedisUnavailableError(f"HEADWATER_REDIS_URL is not a Redis URL: {exc}") from None


def outage_retry(seconds: float) -> Retry:
    """Retries of a call that lost its connection, backing off to 1 s, for about `seconds`."""
    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    retries, waited = 0, 0.0
    while waited < seconds:
        retries += 1
        waited += backoff.compute(retries)
    return Retry(backoff, retries)


class RedisStore:
    """A client with a health check; the keys it is used with come from shared/keys.py."""

    def __init__(
        self, url: str, *, timeout_s: float = 5.0, client: redis.Redis | None = None
    ) -> None:
        self.url = redacted(url)
        self.client: redis.Redis = client or _connect(url, timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """A service's client, whose calls wait out a Redis restarting (for
        HEADWATER_REDIS_RETRY_S)."""
        url = settings.redis_url.get_secret_value()
        client = redis_client(settings)
        client.set_retry(outage_retry(settings.redis_retry_s))
        return cls(url, client=client)

    def ping(self) -> None:
        """Once, without the retries: a wrong address or login is reported at once."""
        retry = self.client.get_retry()
        self.client.set_retry(Retry(NoBackoff(), 0))
        try:
            self._ping()
        finally:
            if retry is not None:
                self.client.set_retry(retry)

    def _ping(self) -> None:
        try:
            self.client.ping()
        except redis.AuthenticationError as exc:
            raise RedisUnavailableError(
                f"Redis at {self.url} refused the login ({exc}): check the user and password "
                "in HEADWATER_REDIS_URL (redis://user:password@host:port/db)"
            ) from None
        except redis.ResponseError as exc:
            if "NOAUTH" not in str(exc) and "NOPERM" not in str(exc):
                raise
            raise RedisUnavailableError(
                f"Redis at {self.url} wants credentials this client lacks ({exc}): put the "
                "user and password in HEADWATER_REDIS_URL, and check that user's ACL"
            ) from None
        except redis.ConnectionError as exc:
            hint = ""
            if "SSL" in str(exc) or "certificate" in str(exc):
                hint = (
                    "; with rediss://, HEADWATER_REDIS_SSL_CA_CERTS must name the CA that "
                    "signed Redis's certificate"
                )
            raise RedisUnavailableError(f"Redis at {self.url} is unreachable: {exc}{hint}") from exc
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"Redis at {self.url} is unreachable: {exc}") from exc

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ping()
                return
            except RedisUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def put_hash(self, key: str, fields: Mapping[str, str | int | float]) -> None:
        self.client.hset(key, mapping=dict(fields))  # type: ignore[arg-type]

    def get_hash(self, key: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    def close(self) -> None:
        self.client.close()
