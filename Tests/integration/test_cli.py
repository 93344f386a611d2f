"""The command line: check, --version, --help."""

import subprocess
from pathlib import Path

from conftest import REPO, gateway_binary


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([gateway_binary(), *args], capture_output=True, text=True, timeout=30, env=env)


def test_check_accepts_the_repository_config():
    result = run("check", "--config", str(REPO / "gateway.yaml"), env={"NOTES_API_KEY": "x", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "OK (1 entry point(s), 3 router(s), 3 service(s))" in result.stdout


def test_check_lists_every_problem_of_a_broken_copy_with_positions(tmp_path: Path):
    text = (REPO / "gateway.yaml").read_text()
    broken = (
        text.replace('rule: "PathPrefix(`/time`)"', 'rule: "PathPrefx(`/time`)"')
        .replace("service: notes", "service: note")
        .replace('idleTimeout: "10m"', 'idleTimeout: "soon"')
        .replace('url: "http://127.0.0.1:9200/mcp"', 'url: "http://127.0.0.1:9200/mcp"\n      retries: 3')
    )
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    result = run("check", "--config", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    problems = [line for line in lines if not line.endswith("problem(s)")]
    # NOTES_API_KEY is unset here too: five problems, each as file:line:column: message.
    assert len(problems) == 5, result.stderr
    for line in problems:
        file, line_no, column, message = line.split(":", 3)
        assert line_no.isdigit() and column.isdigit() and message.strip(), line
    joined = "\n".join(problems)
    broken_lines = broken.splitlines()
    rule_line = next(i for i, l in enumerate(broken_lines, 1) if "PathPrefx" in l)
    assert f":{rule_line}:" in joined and 'unknown matcher "PathPrefx"' in joined
    assert 'service "note" is not defined' in joined
    assert 'got "soon"' in joined
    assert 'unknown key "retries"' in joined
    assert "NOTES_API_KEY is not set" in joined
    assert result.stderr.strip().endswith("5 problem(s)")


def test_serve_refuses_to_start_on_an_invalid_config(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("entryPoints: {}\n")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert "not starting" in result.stderr


def test_version_and_help():
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip()
    help_text = run("--help")
    assert help_text.returncode == 0
    assert "serve" in help_text.stdout and "check" in help_text.stdout


def test_hash_password_writes_a_standard_scrypt_hash():
    import base64
    import hashlib
    import hmac

    result = subprocess.run([gateway_binary(), "hash-password"], input="s3cret pass\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    _, scheme, params, salt, digest = encoded.split("$")
    assert scheme == "scrypt"
    settings = dict(pair.split("=") for pair in params.split(","))

    def b64(text):
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    # An independent implementation (Python's hashlib) derives the same key.
    expected = hashlib.scrypt(b"s3cret pass", salt=b64(salt), n=2 ** int(settings["ln"]), r=int(settings["r"]),
                              p=int(settings["p"]), maxmem=2 ** 27, dklen=len(b64(digest)))
    assert hmac.compare_digest(expected, b64(digest))
    assert int(settings["ln"]) >= 14
    empty = subprocess.run([gateway_binary(), "hash-password"], input="", capture_output=True, text=True, timeout=30)
    assert empty.returncode == 2
