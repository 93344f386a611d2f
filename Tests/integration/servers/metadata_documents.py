"""An HTTPS server of Client ID Metadata Documents for the tests (certificate from a test CA).

/client.json        a valid document whose client_id is its own URL (Cache-Control: max-age=300)
/wrong-id.json      a document naming another client_id
/big.json           a document over 64 KiB
/secret.json        a document asking for client_secret_basic
/redirect-same      302 to /client.json on the same host
/redirect-other     302 to the same document via https://localhost (another host)
/slow.json          a valid document sent one byte a second (longer than any fetch deadline)
/pkjwt.json         a private_key_jwt document with its key set inline (jwks)
/pkjwt-uri.json     a private_key_jwt document naming its key set (jwks_uri → /pkjwt-keys.json)
/_private_key       the PEM private key of those documents (this is a test server)
/_count             how many times each path was fetched"""

import argparse
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

counts: dict[str, int] = {}
# The key a private_key_jwt client signs its assertions with, and the set its documents publish.
CLIENT_KEY = ec.generate_private_key(ec.SECP256R1())
CLIENT_JWKS = {"keys": [{**ECAlgorithm.to_jwk(CLIENT_KEY.public_key(), as_dict=True), "kid": "doc-1", "use": "sig", "alg": "ES256"}]}
lock = threading.Lock()
REDIRECTS = ["http://127.0.0.1:33418/callback"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body: bytes, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        port = self.server.server_address[1]
        base = f"https://127.0.0.1:{port}"
        path = self.path
        if path == "/_private_key":
            pem = CLIENT_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            return self.reply(200, pem, {"Content-Type": "application/x-pem-file"})
        if path == "/_count":
            with lock:
                return self.reply(200, json.dumps(counts).encode(), {"Content-Type": "application/json"})
        with lock:
            counts[path] = counts.get(path, 0) + 1
        document = {"client_name": "Docs Client", "redirect_uris": REDIRECTS, "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}
        json_headers = {"Content-Type": "application/json", "Cache-Control": "max-age=300"}
        if path == "/client.json":
            return self.reply(200, json.dumps({"client_id": base + path, **document}).encode(), json_headers)
        if path == "/wrong-id.json":
            return self.reply(200, json.dumps({"client_id": base + "/client.json", **document}).encode(), json_headers)
        if path == "/big.json":
            return self.reply(200, json.dumps({"client_id": base + path, **document, "padding": "x" * 70000}).encode(), json_headers)
        if path == "/secret.json":
            return self.reply(200, json.dumps({"client_id": base + path, **document, "token_endpoint_auth_method": "client_secret_basic"}).encode(), json_headers)
        if path == "/pkjwt.json":
            return self.reply(200, json.dumps({"client_id": base + path, **document, "token_endpoint_auth_method": "private_key_jwt",
                                               "jwks": CLIENT_JWKS}).encode(), json_headers)
        if path == "/pkjwt-uri.json":
            return self.reply(200, json.dumps({"client_id": base + path, **document, "token_endpoint_auth_method": "private_key_jwt",
                                               "jwks_uri": base + "/pkjwt-keys.json"}).encode(), json_headers)
        if path == "/pkjwt-keys.json":
            return self.reply(200, json.dumps(CLIENT_JWKS).encode(), json_headers)
        if path == "/redirect-same":
            return self.reply(302, b"", {"Location": "/same-target"})
        if path == "/same-target":
            return self.reply(200, json.dumps({"client_id": base + "/redirect-same", **document}).encode(), json_headers)
        if path == "/slow.json":
            import time

            body = json.dumps({"client_id": base + path, **document}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for index in range(len(body)):
                    self.wfile.write(body[index:index + 1])
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
            return
        if path == "/redirect-other":
            return self.reply(302, b"", {"Location": f"https://localhost:{port}/client.json"})
        self.reply(404, b"{}", {"Content-Type": "application/json"})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
