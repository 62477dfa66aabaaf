"""Earth Engine credentials, found where Earth Engine users keep them, with the scopes Earth Engine needs.

In order:
1. a service-account key file named by ``EE_SERVICE_ACCOUNT_KEY``, scoped with ``ee.oauth.SCOPES``;
2. the persistent credentials ``earthengine authenticate`` writes (``~/.config/earthengine/credentials``),
   read with the client's own ``ee.oauth.get_credentials_arguments`` (refresh token, client, scopes);
3. application-default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file, the metadata
   server), loaded with ``google.auth.default(scopes=ee.oauth.SCOPES)``. Loaded without scopes (as
   ``ee.Initialize()``'s own ``google.auth.default()`` does), a service account's token request is refused
   with "invalid_scope" (GoogleCloudPlatform/gce-rescue#42). google-auth applies the scopes only where they
   are required (``with_scopes_if_required``): user credentials keep the scopes they were granted, which
   matters because a refresh may not ask for more ("The requested scope MUST NOT include any scope not
   originally granted", RFC 6749 §6) and ``ee.oauth.SCOPES`` holds Drive and Storage scopes a user who ran
   ``gcloud auth application-default login --scopes=…earthengine,…cloud-platform`` never granted.

Credentials go only to Google's hosts: for any other endpoint (a local stand-in) anonymous credentials are
used, and nothing is read or refreshed. Nothing here logs a credential.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import ee
import google.auth
import google.oauth2.credentials
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import DefaultCredentialsError
from google.oauth2 import service_account

from generator.errors import AuthenticationError

SERVICE_ACCOUNT_ENV = "EE_SERVICE_ACCOUNT_KEY"
"""Environment variable naming a service-account JSON key file."""
HOW_TO_AUTHENTICATE = (
    "authenticate with `earthengine authenticate` or `gcloud auth application-default login "
    "--scopes=https://www.googleapis.com/auth/earthengine,https://www.googleapis.com/auth/cloud-platform`, "
    "or name a service-account key file in EE_SERVICE_ACCOUNT_KEY (or GOOGLE_APPLICATION_CREDENTIALS)"
)


def is_google(url: str) -> bool:
    """Whether ``url`` is on one of Google's API hosts (``*.googleapis.com``) over https."""
    parts = urlparse(url)
    host = parts.hostname or ""
    return parts.scheme == "https" and (host == "googleapis.com" or host.endswith(".googleapis.com"))


def find_credentials(url: str) -> Credentials:
    """The credentials to send to the Earth Engine endpoint ``url``; anonymous unless it is Google's.

    Raises ``AuthenticationError`` (saying how to authenticate) when none are found or a key file is
    unreadable; the message never holds key material.
    """
    if not is_google(url):
        return AnonymousCredentials()  # never send a user's Google credentials to another host
    key = os.environ.get(SERVICE_ACCOUNT_ENV)
    if key:
        try:
            return service_account.Credentials.from_service_account_file(key, scopes=ee.oauth.SCOPES)
        except (OSError, ValueError) as exc:
            raise AuthenticationError(
                f"{SERVICE_ACCOUNT_ENV}={key}: not a readable service-account key file "
                f"({type(exc).__name__}); {HOW_TO_AUTHENTICATE}"
            ) from None
    persistent = _persistent_arguments()
    if persistent.get("refresh_token"):
        return google.oauth2.credentials.Credentials(None, **persistent)
    try:
        credentials, _ = google.auth.default(scopes=ee.oauth.SCOPES)
    except DefaultCredentialsError:
        raise AuthenticationError(f"no Earth Engine credentials found: {HOW_TO_AUTHENTICATE}") from None
    return credentials


def _persistent_arguments() -> dict:
    """What ``earthengine authenticate`` stored (empty when there is no such file or it is unreadable)."""
    try:
        return ee.oauth.get_credentials_arguments()
    except (OSError, ValueError):
        return {}
