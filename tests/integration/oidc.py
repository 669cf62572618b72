"""A tiny OAuth 2 identity provider for the OAUTHBEARER tests: the client credentials grant
at /token (credentials in a Basic header, as librdkafka sends them, or in the form, as
aiokafka's provider does) and the signing key at /jwks, for Kafka's JWT validator."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class IdentityProvider:
    def __init__(self, clients: dict[str, str], audience: str = "kafka") -> None:
        self.clients = clients
        self.audience = audience
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issued: list[str] = []  # client ids, one per token
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/jwks":
                    self._send(200, {"keys": [provider.jwk()]})
                else:
                    self._send(404, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                client_id = form.get("client_id", [""])[0]
                secret = form.get("client_secret", [""])[0]
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
                if self.path != "/token" or provider.clients.get(client_id) != secret:
                    self._send(401, {"error": "invalid_client"})
                    return
                provider.issued.append(client_id)
                self._send(
                    200,
                    {
                        "access_token": provider.token(client_id),
                        "token_type": "bearer",
                        "expires_in": 3600,
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": "k1",
            "use": "sig",
            "alg": "RS256",
            "n": _int(numbers.n),
            "e": _int(numbers.e),
        }

    def token(self, subject: str) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
        claims = {"sub": subject, "iat": now, "exp": now + 3600, "aud": self.audience}
        signing = ".".join(_b64(json.dumps(part).encode()) for part in (header, claims))
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(signature)}"

    def __enter__(self) -> IdentityProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
