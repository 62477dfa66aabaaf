"""Earth Engine credentials end to end: real key and credential files, a local OAuth token endpoint
(tests/ee_standin/oauth.py) that the files name as their ``token_uri``, the real earthengine-api client, and
the stand-in, which accepts only access tokens that endpoint issued.

``find_credentials`` is asked for Google's endpoint (it gives anonymous credentials for any other); the
credentials it returns are then handed to a source on the stand-in, which is what lets a test follow them
through a token request to the API request carrying the token.
"""

from __future__ import annotations

import json
from pathlib import Path

import ee
import google.auth
import google.auth.transport.requests
import google.oauth2.credentials
import pytest
from google.auth.exceptions import RefreshError

from generator.errors import AuthenticationError
from generator.sources.earthengine import HIGH_VOLUME_URL, EarthEngineSource
from generator.sources.ee_auth import find_credentials, is_google
from generator.synthetic import MirrorSpec, build_mirror
from tests.ee_standin import StandinServer
from tests.ee_standin.oauth import JWT_GRANT, TokenServer

YEARS = [2018, 2020]
SA_EMAIL = "changecat@test-project.iam.gserviceaccount.com"
GCLOUD_SCOPES = [
    "https://www.googleapis.com/auth/earthengine",
    "https://www.googleapis.com/auth/cloud-platform",
]
"""What `gcloud auth application-default login --scopes=…` grants, as the error message tells users."""
CLIENT_ID = "123-test.apps.googleusercontent.com"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth_mirror")
    build_mirror(root, MirrorSpec(bounds=(13.300, 52.500, 13.310, 52.506), years=tuple(YEARS), tile_size=64))
    return root


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home without credentials (Earth Engine's, gcloud's) or credentials in the environment; no probe of
    the metadata server."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_SERVICE_ACCOUNT_KEY", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def tokens():
    with TokenServer() as server:
        yield server


@pytest.fixture
def standin(mirror: Path, tokens: TokenServer):
    with StandinServer(mirror, accept=tokens.is_issued) as server:
        yield server


def years_through(standin: StandinServer, credentials) -> list[int]:
    src = EarthEngineSource(
        project="test-project", url=standin.url, credentials=credentials, client_retries=0, retry_attempts=0
    )
    return src.years()


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def assert_only_issued_tokens(standin: StandinServer, tokens: TokenServer) -> None:
    sent = {e.authorization for e in standin.log if e.endpoint in ("algorithms", "value:compute")}
    assert sent and all(a.startswith("Bearer ") and tokens.is_issued(a[7:]) for a in sent), sent


def test_key_file_named_by_ee_service_account_key(
    home: Path, tokens: TokenServer, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = write_json(home / "key.json", tokens.service_account_key(SA_EMAIL))
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", str(key))
    assert years_through(standin, find_credentials(HIGH_VOLUME_URL)) == YEARS
    assert [(r.grant_type, r.subject, r.scopes, r.status) for r in tokens.log] == [
        (JWT_GRANT, SA_EMAIL, ee.oauth.SCOPES, 200)
    ]
    assert_only_issued_tokens(standin, tokens)


def test_application_default_service_account_gets_earth_engine_scopes(
    home: Path, tokens: TokenServer, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming a service-account key: scoped, so its token request succeeds."""
    key = write_json(home / "adc-key.json", tokens.service_account_key(SA_EMAIL))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    assert years_through(standin, find_credentials(HIGH_VOLUME_URL)) == YEARS
    assert [(r.grant_type, r.scopes, r.status) for r in tokens.log] == [(JWT_GRANT, ee.oauth.SCOPES, 200)]
    assert_only_issued_tokens(standin, tokens)


def test_unscoped_service_account_is_refused(
    home: Path, tokens: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the token endpoint does with the unscoped credentials ee.Initialize() itself would load."""
    key = write_json(home / "adc-key.json", tokens.service_account_key(SA_EMAIL))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    unscoped, _ = google.auth.default()
    with pytest.raises(RefreshError, match="invalid_scope"):
        unscoped.refresh(google.auth.transport.requests.Request())


@pytest.mark.parametrize("where", ["gcloud's file", "GOOGLE_APPLICATION_CREDENTIALS"])
def test_application_default_user_keeps_its_granted_scopes(
    home: Path, tokens: TokenServer, standin: StandinServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A user's ADC file: the refresh asks for no more than was granted (the endpoint refuses more, and
    ee.oauth.SCOPES has more: Drive, Storage). google-auth ignores a token_uri in a user's file ("always
    overrides", google/oauth2/credentials.py): the test points its constant here."""
    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", tokens.url)
    refresh = tokens.user_refresh_token(CLIENT_ID, GCLOUD_SCOPES)
    adc = {
        "type": "authorized_user",
        "client_id": CLIENT_ID,
        "client_secret": "test-secret",
        "refresh_token": refresh,
        "token_uri": tokens.url,
    }
    adc_file = write_json(home / "gcloud" / "application_default_credentials.json", adc)
    if where == "GOOGLE_APPLICATION_CREDENTIALS":
        monkeypatch.setenv(where, str(adc_file.rename(home / "user-adc.json")))
    assert years_through(standin, find_credentials(HIGH_VOLUME_URL)) == YEARS
    assert [(r.grant_type, r.subject, r.scopes, r.status) for r in tokens.log] == [
        ("refresh_token", CLIENT_ID, GCLOUD_SCOPES, 200)
    ]
    assert_only_issued_tokens(standin, tokens)


def test_earthengine_authenticate_credentials_come_first(
    home: Path, tokens: TokenServer, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file `earthengine authenticate` writes, read as the client reads it, wins over ADC. The client
    fixes its token URI ("Not overridable in file", ee/oauth.py): the test points that constant here."""
    monkeypatch.setattr(ee.oauth, "TOKEN_URI", tokens.url)
    refresh = tokens.user_refresh_token(CLIENT_ID, GCLOUD_SCOPES)
    stored = {"refresh_token": refresh, "client_id": CLIENT_ID, "client_secret": "s", "scopes": GCLOUD_SCOPES}
    write_json(home / ".config" / "earthengine" / "credentials", stored)
    other = write_json(home / "adc-key.json", tokens.service_account_key(SA_EMAIL))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(other))
    assert years_through(standin, find_credentials(HIGH_VOLUME_URL)) == YEARS
    assert [(r.grant_type, r.subject, r.status) for r in tokens.log] == [("refresh_token", CLIENT_ID, 200)]
    assert_only_issued_tokens(standin, tokens)


def test_no_credentials_is_a_clear_error(home: Path) -> None:
    with pytest.raises(AuthenticationError, match="earthengine authenticate"):
        find_credentials(HIGH_VOLUME_URL)


def test_credentials_never_go_to_another_host(
    home: Path, tokens: TokenServer, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a valid key in the environment, a non-Google endpoint gets no Authorization header at all and
    no token is even asked for."""
    key = write_json(home / "key.json", tokens.service_account_key(SA_EMAIL))
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", str(key))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with StandinServer(mirror) as open_standin:  # answers without a token
        src = EarthEngineSource(project="test-project", url=open_standin.url, client_retries=0)
        assert src.years() == YEARS
        assert open_standin.log and all(e.authorization == "" for e in open_standin.log)
    assert tokens.log == []


@pytest.mark.parametrize(
    "url, google",
    [
        (HIGH_VOLUME_URL, True),
        ("https://earthengine.googleapis.com/", True),
        ("http://earthengine.googleapis.com", False),  # never a token in clear text
        ("https://googleapis.com.example.org", False),
        ("http://127.0.0.1:8080", False),
    ],
)
def test_which_hosts_are_google(url: str, google: bool) -> None:
    assert is_google(url) is google


def test_token_endpoint_refuses_scopes_never_granted(tokens: TokenServer) -> None:
    """The stand-in endpoint's rule (RFC 6749 §6) that keeps user credentials unscoped: a refresh asking
    for all of ee.oauth.SCOPES with a token granted only Earth Engine and Cloud Platform is refused."""
    refresh = tokens.user_refresh_token(CLIENT_ID, GCLOUD_SCOPES)
    user = google.oauth2.credentials.Credentials(
        None, refresh, token_uri=tokens.url, client_id=CLIENT_ID, client_secret="s", scopes=ee.oauth.SCOPES
    )
    with pytest.raises(RefreshError, match="invalid_scope"):
        user.refresh(google.auth.transport.requests.Request())
    assert [(r.grant_type, r.status) for r in tokens.log] == [("refresh_token", 400)]
