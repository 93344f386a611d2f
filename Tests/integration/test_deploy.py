"""deploy/: what can be checked without Docker or Kubernetes on this machine. The Kubernetes
manifests against the API schemas (kubernetes-validate --strict), the gateway configurations the
packaging ships with the gateway's own `check`, the compose file's structure, the systemd unit,
and every path the Dockerfile copies."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, gateway_binary

DEPLOY = REPO / "deploy"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CHECK_ENV = {**os.environ, "POD_IP": "10.0.0.5", "MCPGW_CLUSTER_SECRET": "x" * 44}


def validate(paths) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run([str(tool), "--strict", *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_kubernetes_manifests_pass_strict_schema_validation(tmp_path):
    assert len(KUBERNETES) >= 3
    result = validate(KUBERNETES)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {document["kind"] for path in KUBERNETES for document in yaml.safe_load_all(path.read_text()) if document}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "StatefulSet"} <= kinds
    # The check can fail: a misspelled field is refused.
    broken = tmp_path / "broken.yaml"
    broken.write_text((DEPLOY / "kubernetes" / "gateway.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    assert validate([broken]).returncode != 0


def test_the_deployment_runs_several_replicas_with_probes_and_no_affinity():
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "gateway.yaml").read_text()) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = next(d for d in documents if d["kind"] == "Service")
    assert "sessionAffinity" not in service["spec"]
    # Longer than the default shutdownGrace, so a stopping pod hands its sessions on.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 15


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([gateway_binary(), "check", "--config", str(path)], capture_output=True, text=True, env=CHECK_ENV, timeout=60)


def test_the_shipped_gateway_configurations_pass_check(tmp_path):
    configmap = next(d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "gateway.yaml").read_text()) if d and d["kind"] == "ConfigMap")
    embedded = tmp_path / "configmap-gateway.yaml"
    embedded.write_text(configmap["data"]["gateway.yaml"])
    for path in [embedded, DEPLOY / "compose" / "gateway-a.yaml", DEPLOY / "compose" / "gateway-b.yaml"]:
        result = check(path)
        assert result.returncode == 0, f"{path}: {result.stdout}{result.stderr}"
        assert "note: cluster: this instance is reached by the others at http" in result.stdout, result.stdout
    # Without the secret the same file is refused, with the reason.
    result = subprocess.run([gateway_binary(), "check", "--config", str(embedded)], capture_output=True, text=True,
                            env={k: v for k, v in CHECK_ENV.items() if k != "MCPGW_CLUSTER_SECRET"}, timeout=60)
    assert result.returncode != 0 and "cluster.secret" in result.stdout + result.stderr


def test_compose_runs_two_instances_redis_and_nginx_from_files_that_exist():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "gateway-a", "gateway-b", "nginx"} <= set(services)
    for name in ("gateway-a", "gateway-b"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        for volume in services[name]["volumes"] + services["nginx"]["volumes"]:
            assert (DEPLOY / volume.split(":")[0]).is_file(), volume
    advertised = {yaml.safe_load((DEPLOY / "compose" / f"gateway-{x}.yaml").read_text())["cluster"]["advertiseURL"] for x in "ab"}
    assert advertised == {"http://gateway-a:8080", "http://gateway-b:8080"}
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert "gateway-a:8080" in nginx and "gateway-b:8080" in nginx and "proxy_buffering off" in nginx
    assert "hash" not in nginx and "sticky" not in nginx  # no affinity needed


def test_the_dockerfile_copies_only_paths_that_exist_and_builds_in_two_stages():
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "swift:6.3" in text
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), source
    assert "libhiredis" in text


def test_the_systemd_unit_is_well_formed(tmp_path):
    unit = (DEPLOY / "systemd" / "mcp-gateway.service").read_text()
    sections = re.findall(r"^\[(\w+)\]$", unit, re.M)
    assert sections == ["Unit", "Service", "Install"]
    assert re.search(r"^ExecStart=/usr/local/bin/mcp-gateway serve --config \S+$", unit, re.M)
    assert re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M) and int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1)) > 15
    analyze = shutil.which("systemd-analyze")
    if analyze:  # an extra check where systemd is installed (the assertions above always run)
        copy = tmp_path / "mcp-gateway.service"
        copy.write_text(unit.replace("/usr/local/bin/mcp-gateway", gateway_binary()))
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        problems = [line for line in (result.stdout + result.stderr).splitlines() if "mcp-gateway.service" in line and "executable" not in line]
        assert problems == [], problems
