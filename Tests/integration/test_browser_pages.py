"""The consent and error pages rendered in a real headless Chromium (Debian's `chromium`): they
must show the client, the redirect host and the resource, and work without scripts — the pages
carry none and their CSP (`default-src 'none'`) forbids any, so what Chromium renders is what a
browser with JavaScript off gets. (Chromium's own scriptEnabled=false switch also disables its
headless screenshot machinery, so it cannot be used here.) Screenshots are kept under
artifacts/screenshots/ (gitignored) for CI."""

import shutil
import subprocess

import pytest

from conftest import REPO
from oauth_helpers import pkce_pair, register
from test_oauth import config as oauth_config

ARTIFACTS = REPO / "artifacts" / "screenshots"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("chromium is not installed (the test recipe installs Debian's chromium)")


def render(url: str, name: str, tmp_path) -> str:
    """Screenshot and rendered DOM of `url`."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    common = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / ('profile-' + name)}", "--window-size=900,900"]
    shot = ARTIFACTS / f"{name}.png"
    subprocess.run([*common, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=90)
    assert shot.exists() and shot.stat().st_size > 5000, "screenshot missing or blank"
    dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=90).stdout
    return dom


@pytest.fixture
def gateway(start_gateway, redis_server, fake_github, local_password_hash):
    return start_gateway(oauth_config(redis_server.url, fake_github, local_password_hash))


def test_consent_page_renders_without_javascript(gateway, tmp_path):
    client = register(gateway, client_name="Screenshot Client", redirect_uris=["https://app.example.com/oauth/callback"])
    _, challenge = pkce_pair()
    from urllib.parse import urlencode
    url = gateway.url("/authorize?" + urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": "https://app.example.com/oauth/callback",
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256", "resource": gateway.url("/time/mcp"),
    }))
    dom = render(url, "consent", tmp_path)
    assert "Screenshot Client" in dom
    assert "app.example.com" in dom and gateway.url("/time/mcp") in dom
    # Plain forms: sign-in works with scripts off (and the CSP forbids scripts anyway).
    assert 'action="/authorize/consent"' in dom and "<script" not in dom.lower()
    import httpx
    assert "default-src 'none'" in httpx.get(url, timeout=10).headers["content-security-policy"]


def test_error_page_renders_escaped(gateway, tmp_path):
    dom = render(gateway.url("/authorize?client_id=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"), "error-unknown-client", tmp_path)
    assert "Unknown application" in dom
    assert "<img" not in dom and "&lt;img src=x onerror=alert(1)&gt;" in dom
