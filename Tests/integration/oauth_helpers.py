"""Helpers for driving the gateway's authorization server the way a client and a browser do."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import socket
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

CALLBACK = "http://127.0.0.1:33418/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def jwt_header(token: str) -> dict:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def error_page_return(response) -> dict:
    """An /authorize error shown as a page (never redirected, RFC 9700 §4.11.2): the query of its
    "Return to the application" link, which the user may follow."""
    import re

    assert response.status_code == 400 and "location" not in response.headers, response
    found = re.search(r'id="return" href="([^"]*)"', response.text)
    assert found, response.text
    return query_of(html.unescape(found.group(1)))


def register(gateway, **overrides) -> dict:
    body = {
        "client_name": "Test Client",
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        **overrides,
    }
    response = httpx.post(gateway.url("/register"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._current = {"action": attrs.get("action"), "method": attrs.get("method"), "fields": {}}
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and attrs.get("name"):
            self._current["fields"][attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def forms(page: str) -> list[dict]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


def form_for(page: str, action: str, provider: str | None = None) -> dict:
    for form in forms(page):
        fields = form["fields"]
        if fields.get("action") == action and (provider is None or fields.get("provider") == provider):
            return fields
    raise AssertionError(f"no {action}/{provider} form on the page:\n{page}")


@dataclass
class Authorization:
    """The outcome of a browser run through /authorize: where the browser ended up."""
    location: str | None
    response: httpx.Response

    @property
    def params(self) -> dict:
        assert self.location, f"no redirect; page {self.response.status_code}:\n{self.response.text}"
        return query_of(self.location)


class Browser:
    """A cookie-keeping browser that stops at the client's redirect URI."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.client = httpx.Client(follow_redirects=False, timeout=15)

    def close(self):
        self.client.close()

    def authorize_url(self, client_id: str, challenge: str, redirect_uri: str = CALLBACK, state: str = "st-123", **extra) -> str:
        params = {
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state,
            "code_challenge": challenge, "code_challenge_method": "S256", **extra,
        }
        params = {k: v for k, v in params.items() if v is not None}
        return self.gateway.url("/authorize?" + urlencode(params))

    def open(self, url: str) -> httpx.Response:
        return self.client.get(url)

    def follow(self, response: httpx.Response, stop_prefix: str = CALLBACK) -> Authorization:
        """Follows redirects until the client's redirect URI (not fetched) or a page."""
        for _ in range(10):
            if response.status_code not in (301, 302, 303, 307, 308):
                return Authorization(None, response)
            location = response.headers["location"]
            if location.startswith(stop_prefix):
                return Authorization(location, response)
            response = self.client.get(location)
        raise AssertionError("too many redirects")

    def approve(self, consent_page: httpx.Response, provider: str = "github", **fields) -> httpx.Response:
        assert consent_page.status_code in (200, 401), consent_page.text
        form = form_for(consent_page.text, "approve", provider)
        return self.client.post(self.gateway.url("/authorize/consent"), data={**form, **fields})

    def deny(self, consent_page: httpx.Response) -> httpx.Response:
        form = form_for(consent_page.text, "deny")
        return self.client.post(self.gateway.url("/authorize/consent"), data=form)

    def sign_in(self, client_id: str, challenge: str, provider: str = "github", redirect_uri: str = CALLBACK, **extra) -> Authorization:
        page = self.open(self.authorize_url(client_id, challenge, redirect_uri=redirect_uri, **extra))
        fields = {}
        if provider == "local":
            fields = {"username": extra.pop("username", "alice"), "password": extra.pop("password", "correct horse battery staple")}
        return self.follow(self.approve(page, provider, **fields), stop_prefix=redirect_uri)


def token_request(gateway, data: dict, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(gateway.url("/token"), data=data, auth=auth, timeout=10)


def exchange_code(gateway, client_id: str, code: str, verifier: str, resource: str | None = None, redirect_uri: str = CALLBACK, auth=None) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    if auth is None:
        data["client_id"] = client_id
    if resource:
        data["resource"] = resource
    return token_request(gateway, data, auth=auth)


def raw_refreshes(gateway, client, refresh_token, count: int) -> list[tuple[int, bytes]]:
    """`count` presentations of one refresh token written back to back on their own connections
    before any answer is read: what a client racing its own refreshes sends."""
    body = urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]}).encode()
    request = (f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    sockets = [socket.create_connection(("127.0.0.1", gateway.port), timeout=20) for _ in range(count)]
    for sock in sockets:
        sock.sendall(request)
    answers = []
    for sock in sockets:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        head, _, payload = data.partition(b"\r\n\r\n")
        answers.append((int(head.split(b" ")[1]), payload))
    return answers


def page_text(response: httpx.Response) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", response.text))


def access_token_for(gateway, fake_github, login: str, user_id: int, resource: str, orgs=("acme",)) -> str:
    """Signs `login` in through the fake GitHub with a fresh public client; returns the access token."""
    fake_github.set_user(login, user_id=user_id, orgs=list(orgs))
    browser = Browser(gateway)
    try:
        client = register(gateway)
        verifier, challenge = pkce_pair()
        code = browser.sign_in(client["client_id"], challenge, resource=resource).params["code"]
        return exchange_code(gateway, client["client_id"], code, verifier, resource=resource).json()["access_token"]
    finally:
        browser.close()
