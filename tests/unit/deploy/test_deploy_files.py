"""deploy/: the files parse, the Kubernetes manifests validate against the Kubernetes schemas
(kubernetes-validate: the API's JSON schemas bundled per version, offline, strict), and every
`settle` command, option, SETTLE_* variable and settle_* metric they name exists.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import typer.main
import yaml

from settle.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"
MANIFESTS = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _resources() -> list[dict]:
    return [d for p in MANIFESTS for d in _docs(p)]


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


def test_every_yaml_and_json_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 12
    for f in files:
        assert _docs(f), f
    for f in DEPLOY.rglob("*.json"):
        json.loads(f.read_text())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    worker = next(d for d in _resources() if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(worker))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 9100
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(worker))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in MANIFESTS}


def _pod_specs() -> dict[str, dict]:
    out = {}
    for d in _resources():
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            out[f"{d['kind']}/{d['metadata']['name']}"] = spec["template"]
    return out


def test_cluster_shape_gpu_scorers_cron_trainer_probes_and_disruption_budget() -> None:
    resources = _resources()
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in resources}
    scorer = kinds[("Deployment", "settle-scorer")]["spec"]["template"]["spec"]["containers"][0]
    assert scorer["resources"]["limits"]["nvidia.com/gpu"] == 1
    trainer = kinds[("CronJob", "settle-trainer")]
    assert trainer["spec"]["concurrencyPolicy"] == "Forbid"
    assert trainer["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "train"
    # every long-running container is probed on a port it declares
    for kind in ("settle-worker", "settle-scorer", "settle-ingest"):
        c = kinds[("Deployment", kind)]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
        probes = [c[k] for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c]
        assert probes, kind
        assert all(p["httpGet"]["port"] in ports for p in probes), kind
    ingest = kinds[("Deployment", "settle-ingest")]["spec"]["template"]["spec"]["containers"][0]
    assert (ingest["livenessProbe"]["httpGet"]["path"], ingest["readinessProbe"]["httpGet"]["path"]) == ("/healthz", "/readyz")
    # the workers' budget selects exactly the workers' pods
    pdb = kinds[("PodDisruptionBudget", "settle-worker")]["spec"]
    worker_labels = kinds[("Deployment", "settle-worker")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= worker_labels.items()
    assert pdb.get("maxUnavailable") == 1
    # every setting comes from the ConfigMap and the Secrets: no inline env on any pod
    for name, template in _pod_specs().items():
        for c in template["spec"]["containers"]:
            assert "env" not in c, name
            refs = {next(iter(ref.values()))["name"] for ref in c["envFrom"]}
            assert {"settle-config", "settle-kafka-credentials"} <= refs, name


def test_compose_kraft_kafka_gpu_reservations_and_every_role() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"kafka", "topics", "settle-worker", "scorer", "ingest", "trainer", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka
    for gpu_role in ("scorer", "trainer"):
        devices = services[gpu_role]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), gpu_role
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prometheus["scrape_configs"]}
    assert {"settle-worker", "scorer", "trainer", "ingest"} <= jobs
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "settle.json").read_text())
    assert len(dashboard["panels"]) >= 10


# -- everything named in deploy/ exists in the CLI and the settings --------------------------


def _commands() -> list[list[str]]:
    """Every `settle ...` invocation in deploy/: container args, compose commands, shell lines, README blocks."""
    found: list[list[str]] = []
    for template in _pod_specs().values():
        for c in template["spec"]["containers"]:
            if c.get("command", [None])[0] == "sh":
                found += _shell_commands(" ".join(c["args"]))
            else:
                found.append(["settle", *c["args"]])
    for name, service in _compose()["services"].items():
        if not str(service.get("image", "")).startswith("settle:"):
            continue
        command = service.get("command", [])
        if service.get("entrypoint", [None])[0] == "sh":
            found += _shell_commands(" ".join(command))
        else:
            found.append(["settle", *command])
    readme = (DEPLOY / "README.md").read_text()
    code = re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S) + re.findall(r"`([^`\n]+)`", readme)
    found += [c for block in code for c in _shell_commands(block)]
    return found


def _shell_commands(text: str) -> list[list[str]]:
    """`settle NAME --opts...` in shell text, nested ones in $(...) on their own (cut at $(, ), ;, |, &, `, #)."""
    out = []
    for m in re.finditer(r"(?<![\w/.-])settle (?=[a-z])", text):
        rest = re.split(r"\$\$?\(|[);|&`#\n]", text[m.end():], maxsplit=1)[0]
        out.append(["settle", *[t.strip("\"'") for t in rest.split()]])
    return out


def test_every_command_and_option_named_in_deploy_exists() -> None:
    from settle.streams.cli import app

    group = typer.main.get_command(app)
    seen = set()
    for argv in _commands():
        name = argv[1]
        if name in {"broker", "--help"} and name not in group.commands:
            continue
        assert name in group.commands, f"`settle {name}` named in deploy/ is not a command: {argv}"
        command = group.commands[name]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for token in argv[2:]:
            if token.startswith("--"):
                assert token.split("=")[0] in options, f"`settle {name} {token}` is not an option: {argv}"
        seen.add(name)
    assert {"worker", "scorer", "ingest", "train", "topics", "publish", "bootstrap"} <= seen, seen


def _known_variables() -> set[str]:
    from settle.streams.ingest.config import IngestConfig

    return {f"SETTLE_{f.name.upper()}" for f in fields(Settings)} | {
        f"SETTLE_INGEST_{f.name.upper()}" for f in fields(IngestConfig)}


def test_every_settle_variable_named_in_deploy_is_a_setting() -> None:
    known = _known_variables()
    named = set()
    for f in [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".md", ".json", ""}]:
        named |= set(re.findall(r"\bSETTLE_[A-Z0-9_]+\b", f.read_text()))
    assert {"SETTLE_BOOTSTRAP", "SETTLE_SASL_PASSWORD", "SETTLE_SSL_CAFILE", "SETTLE_METRICS_PORT"} <= named
    named = {n for n in named if not n.endswith("_")}  # "SETTLE_INGEST_*" in prose
    unknown = sorted(named - known)
    assert not unknown, f"SETTLE_* variables in deploy/ that no setting reads: {unknown}"
    configmap = next(d for d in _resources() if d["kind"] == "ConfigMap")
    secrets = [d for d in _resources() if d["kind"] == "Secret"]
    given = set(configmap["data"]) | {k for s in secrets for k in s.get("stringData", {}) if k.startswith("SETTLE_")}
    assert given <= known
    # the values parse as the settings would read them in a pod
    import os

    env = {k: v for k, v in configmap["data"].items() if not k.startswith("SETTLE_INGEST_")}
    env |= secrets[0]["stringData"]
    saved = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        s = Settings.from_env()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert (s.security_protocol, s.sasl_mechanism, s.partitions) == ("SASL_SSL", "SCRAM-SHA-512", 32)
    from settle.streams.kafka.security import check

    check(s)  # a coherent security configuration


def test_every_metric_in_the_dashboard_and_alerts_exists() -> None:
    from prometheus_client import REGISTRY

    import settle.streams.kafka.prometheus  # noqa: F401  (registers the families)

    exported = set()
    for family in REGISTRY.collect():
        exported.add(family.name)
        exported |= {s.name for s in family.samples}
        exported |= {family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum", "_created", "_info")}
    text = (DEPLOY / "grafana" / "dashboards" / "settle.json").read_text()
    named = set(re.findall(r"\bsettle_[a-z0-9_]+\b", text))
    assert len(named) >= 15
    missing = sorted(named - exported)
    assert not missing, f"metrics in the dashboard that no settle process exports: {missing}"
