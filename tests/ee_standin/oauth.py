"""A stand-in for Google's OAuth 2.0 token endpoint on 127.0.0.1, for the Earth Engine credential paths.

Key files and application-default credential files name their token endpoint (``token_uri``) and google-auth
honours it, so a test can point real key files at this server and exercise them end to end: signing, token
request, then the access token on each Earth Engine request (the stand-in accepts only tokens issued here,
``TokenServer.issued``).

Modelled behaviour, with its source:
- Service accounts (JWT bearer grant, RFC 7523): the assertion is an RS256 JWT signed with the key file's
  private key, ``iss`` the account's email, ``aud`` Google's token URI (google-auth always writes it), and a
  ``scope`` claim. An assertion without scopes is refused with Google's answer ``{"error": "invalid_scope",
  "error_description": "Invalid OAuth scope or ID token audience provided."}`` (as users report it for
  application-default service-account credentials loaded without scopes: GoogleCloudPlatform/gce-rescue#42,
  googleapis/google-oauth-java-client#602).
- Users (refresh-token grant, RFC 6749 §6): "The requested scope MUST NOT include any scope not originally
  granted by the resource owner, and if omitted is treated as equal to the scope originally granted";
  asking for more is refused with ``invalid_scope``.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
"""The audience google-auth writes into every service-account assertion, whatever the key's token_uri."""
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
INVALID_SCOPE = "Invalid OAuth scope or ID token audience provided."
TOKEN_LIFETIME_S = 3600


@dataclass
class TokenRequest:
    """One request to the endpoint: the grant, who asked, the scopes asked for, the answer."""

    grant_type: str
    subject: str  # service-account email or OAuth client id
    scopes: list[str]
    status: int
    error: str = ""


@dataclass
class TokenServer:
    """The token endpoint; ``url`` is what key files name as ``token_uri``."""

    accounts: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    refresh_tokens: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # → (client id, granted)
    issued: dict[str, list[str]] = field(default_factory=dict)  # access token → scopes
    log: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/token"

    def __enter__(self) -> TokenServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def is_issued(self, token: str) -> bool:
        with self._lock:
            return token in self.issued

    # --- accounts --------------------------------------------------------------------------------------

    def service_account_key(self, email: str, project: str = "test-project") -> dict[str, Any]:
        """A new RSA key registered for ``email``, as the JSON key file Google issues (token_uri: here)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.accounts[email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": f"key-{len(self.accounts)}",
            "private_key": pem,
            "client_email": email,
            "client_id": "1000000000000000000",
            "token_uri": self.url,
        }

    def user_refresh_token(self, client_id: str, granted: list[str]) -> str:
        token = f"1//refresh-{len(self.refresh_tokens) + 1}"
        self.refresh_tokens[token] = (client_id, list(granted))
        return token

    # --- grants ----------------------------------------------------------------------------------------

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        kind = form.get("grant_type", "")
        if kind == JWT_GRANT:
            subject, scopes, error = self._check_assertion(form.get("assertion", ""))
        elif kind == "refresh_token":
            subject, scopes, error = self._check_refresh(form)
        else:
            subject, scopes, error = "", [], ("unsupported_grant_type", f"grant_type {kind!r}")
        with self._lock:
            if error:
                self.log.append(TokenRequest(kind, subject, scopes, 400, error[0]))
                return 400, {"error": error[0], "error_description": error[1]}
            token = f"ya29.standin-{next(self._serial)}"
            self.issued[token] = scopes
            self.log.append(TokenRequest(kind, subject, scopes, 200))
        return 200, {
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_S,
            "token_type": "Bearer",
            "scope": " ".join(scopes),
        }

    def _check_assertion(self, assertion: str) -> tuple[str, list[str], tuple[str, str] | None]:
        try:
            head, body, sig = assertion.split(".")
            header, claims = json.loads(_b64(head)), json.loads(_b64(body))
        except ValueError:
            return "", [], ("invalid_grant", "Invalid JWT: malformed.")
        email = str(claims.get("iss", ""))
        scopes = str(claims.get("scope", "")).split()
        key = self.accounts.get(email)
        if header.get("alg") != "RS256" or key is None:
            return email, scopes, ("invalid_grant", "Invalid JWT Signature.")
        try:
            key.verify(_b64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return email, scopes, ("invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != GOOGLE_TOKEN_URI or not claims.get("exp", 0) > time.time():
            return email, scopes, ("invalid_grant", "Invalid JWT: Failed audience or expiry check.")
        if not scopes:
            return email, scopes, ("invalid_scope", INVALID_SCOPE)
        return email, scopes, None

    def _check_refresh(self, form: dict[str, str]) -> tuple[str, list[str], tuple[str, str] | None]:
        client_id = form.get("client_id", "")
        known = self.refresh_tokens.get(form.get("refresh_token", ""))
        if known is None or known[0] != client_id:
            return client_id, [], ("invalid_grant", "Token has been expired or revoked.")
        granted = known[1]
        asked = form["scope"].split() if form.get("scope") else list(granted)
        if not set(asked) <= set(granted):
            return client_id, asked, ("invalid_scope", "Bad Request")
        return client_id, asked, None


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            code, answer = server.grant(form) if self.path == "/token" else (404, {"error": "not_found"})
            body = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
