"""A fake GitHub for the tests: the OAuth web flow (authorize redirect, access_token exchange with
GitHub's error-with-status-200 answers) and the REST reads sign-in uses (/user, /user/orgs,
/user/teams), under both github.com paths and GitHub Enterprise's /api/v3 prefix.

Test control: POST /_control with JSON {"login", "id", "orgs", "teams", "deny", "exchange_error"}
sets the user who signs in next; GET /_requests lists the paths served so far."""

import argparse
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

CLIENT_ID = "fake-github-client"
CLIENT_SECRET = "fake-github-secret"

state = {
    "user": {"login": "octocat", "id": 583231, "orgs": [], "teams": []},
    "deny": False,
    "exchange_error": None,
    "codes": {},
    "tokens": {},
    "requests": [],
    # Current org/team memberships by login (lower case), for the membership-token checks.
    "members": {},
}
MEMBERSHIP_TOKEN = "membership-token"
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def reply_empty(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        with lock:
            state["requests"].append({"method": "GET", "path": path, "query": query,
                                      "authorization": self.headers.get("Authorization"),
                                      "user_agent": self.headers.get("User-Agent")})
        if path == "/_requests":
            with lock:
                return self.send_json(200, state["requests"])
        if path == "/login/oauth/authorize":
            if query.get("client_id") != CLIENT_ID or "redirect_uri" not in query:
                return self.send_json(400, {"error": "bad client_id or redirect_uri"})
            if state["deny"]:
                target = query["redirect_uri"] + "?" + urlencode({"error": "access_denied", "state": query.get("state", "")})
            else:
                code = secrets.token_hex(10)
                with lock:
                    state["codes"][code] = dict(state["user"])
                target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        api = path[len("/api/v3"):] if path.startswith("/api/v3/") else path
        auth = self.headers.get("Authorization", "")
        parts = api.strip("/").split("/")
        if len(parts) >= 4 and parts[0] == "orgs" and (parts[2] == "members" or parts[2] == "teams"):
            if auth != f"Bearer {MEMBERSHIP_TOKEN}":
                return self.send_json(401, {"message": "Bad credentials"})
            with lock:
                member = state["members"].get(parts[-1].lower(), {"orgs": [], "teams": []})
            orgs = [o.lower() for o in member["orgs"]]
            teams = [t.lower() for t in member["teams"]]
            if parts[2] == "members" and len(parts) == 4:
                if parts[1].lower() in orgs:
                    return self.reply_empty(204)
                return self.send_json(404, {"message": "Not Found"})
            if len(parts) == 6 and parts[4] == "memberships":
                if f"{parts[1]}/{parts[3]}".lower() in teams:
                    return self.send_json(200, {"state": "active", "role": "member"})
                return self.send_json(404, {"message": "Not Found"})
        user = state["tokens"].get(auth.removeprefix("Bearer ").removeprefix("token ")) if auth else None
        if api in ("/user", "/user/orgs", "/user/teams"):
            if user is None:
                return self.send_json(401, {"message": "Bad credentials"})
            if api == "/user":
                return self.send_json(200, {"login": user["login"], "id": user["id"], "type": "User", "email": user.get("email")})
            if api == "/user/orgs":
                return self.send_json(200, [{"login": org, "id": index} for index, org in enumerate(user["orgs"])])
            return self.send_json(200, [
                {"slug": team.split("/")[1], "name": team, "organization": {"login": team.split("/")[0]}} for team in user["teams"]
            ])
        self.send_json(404, {"message": "Not Found"})

    def do_POST(self):
        url = urlparse(self.path)
        raw = self.body()
        with lock:
            state["requests"].append({"method": "POST", "path": url.path, "accept": self.headers.get("Accept")})
        if url.path == "/_control":
            update = json.loads(raw or b"{}")
            with lock:
                if "user" in update:
                    state["user"] = {"orgs": [], "teams": [], **update["user"]}
                    state["members"][state["user"]["login"].lower()] = {"orgs": state["user"]["orgs"], "teams": state["user"]["teams"]}
                if "membership" in update:
                    state["members"][update["membership"]["login"].lower()] = {
                        "orgs": update["membership"].get("orgs", []), "teams": update["membership"].get("teams", [])}
                for key in ("deny", "exchange_error"):
                    if key in update:
                        state[key] = update[key]
                if update.get("reset_requests"):
                    state["requests"].clear()
            return self.send_json(200, {"ok": True})
        if url.path == "/login/oauth/access_token":
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            # GitHub answers OAuth errors with status 200 and an error field.
            if state["exchange_error"]:
                return self.send_json(200, {"error": state["exchange_error"], "error_description": "The code passed is incorrect or expired."})
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return self.send_json(200, {"error": "incorrect_client_credentials", "error_description": "The client_id and/or client_secret passed are incorrect."})
            with lock:
                user = state["codes"].pop(form.get("code", ""), None)
            if user is None:
                return self.send_json(200, {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})
            token = "gho_" + secrets.token_hex(16)
            with lock:
                state["tokens"][token] = user
            if "json" not in (self.headers.get("Accept") or ""):
                data = urlencode({"access_token": token, "token_type": "bearer", "scope": ""}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-www-form-urlencoded")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            return self.send_json(200, {"access_token": token, "token_type": "bearer", "scope": "read:org"})
        self.send_json(404, {"message": "Not Found"})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
