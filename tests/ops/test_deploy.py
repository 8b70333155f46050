"""deploy/: the Dockerfile and the YAML files are well formed and say what they must; the Grafana
dashboard only charts metrics that a live server's /metrics exports."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from sfu.config import load_config
from tests.conftest import ServerProcess
from tests.ops.helpers import metric_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCKER_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                       "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_parses_and_runs_the_server_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    assert all(keyword in DOCKER_INSTRUCTIONS for keyword, _ in instructions), instructions
    assert instructions[0][0] == "FROM" and re.match(r"python:3\.1[1-9]-slim", instructions[0][1])
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(next(rest for keyword, rest in instructions if keyword == "ENTRYPOINT"))
    assert entrypoint == ["sfu", "serve"]
    for keyword in ("CMD", "HEALTHCHECK"):
        assert any(k == keyword for k, _ in instructions), keyword
    for keyword, rest in instructions:
        if keyword != "COPY" or rest.startswith("--from="):  # a multi-stage copy names the build stage's files
            continue
        for source in rest.split()[:-1]:
            assert (DEPLOY.parent / source).exists(), f"COPY source {source} exists"
    # the image is built in two stages: the C forwarding step is compiled in the first
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build"), stages
    assert any(keyword == "COPY" and rest.startswith("--from=build") for keyword, rest in instructions)


def test_image_configuration_is_valid() -> None:
    config = load_config(DEPLOY / "sfu.toml", {"auth": {"jwt_secret": "x"}})
    assert config.host == "0.0.0.0" and config.network.udp_port_min > 0 and not config.auth.dev_mode


def test_compose_runs_the_sfu_with_coturn_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"sfu", "coturn", "prometheus", "grafana"}
    assert services["sfu"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "--use-auth-secret" in services["coturn"]["command"]
    assert "SFU_TURN__SECRET" in services["sfu"]["environment"]
    for service in services.values():
        for volume in service.get("volumes", []):
            assert (DEPLOY / volume.split(":")[0]).exists(), volume
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["metrics_path"] == "/metrics"
    for path in (DEPLOY / "grafana" / "provisioning").rglob("*.yaml"):
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1


def test_kubernetes_manifest_probes_readyz_and_drains_before_stopping() -> None:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    workload = kinds.get("DaemonSet") or kinds["Deployment"]
    pod = workload["spec"]["template"]["spec"]
    assert pod.get("hostNetwork") is True
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "/admin/drain" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    config = tomllib.loads(kinds["ConfigMap"]["data"]["sfu.toml"])
    assert pod["terminationGracePeriodSeconds"] > config["server"]["drain_timeout_s"]


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sfu.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has queries"
    return {name for expr in exprs for name in re.findall(r"\bsfu_[a-z0-9_]+", expr)}


@pytest.mark.slow
def test_dashboard_charts_only_metrics_the_server_exports(sfu_server: ServerProcess) -> None:
    exported = metric_names(sfu_server.url)
    suffixes = ("_total", "_bucket", "_sum", "_count")
    missing = {name for name in dashboard_metrics()
               if name not in exported and not any(name.endswith(s) and name[: -len(s)] in exported
                                                   for s in suffixes)}
    assert not missing, f"the dashboard queries metrics /metrics does not export: {sorted(missing)}"
    charted = dashboard_metrics()
    for needed in ("sfu_rooms", "sfu_participants", "sfu_rtp_bytes_in_total", "sfu_rtp_packets_out_total",
                   "sfu_nack_received_total", "sfu_pli_sent_total", "sfu_layer_switches_total",
                   "sfu_bandwidth_estimate_bps_bucket", "sfu_event_loop_lag_seconds", "sfu_signaling_errors_total"):
        assert needed in charted, f"the dashboard charts {needed}"
