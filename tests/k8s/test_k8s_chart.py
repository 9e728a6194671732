"""The Helm chart: lint, render, validate against Kubernetes 1.30 schemas, and behave."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_helpers import (
    CHART,
    KUBERNETES_VERSION,
    PRODUCTION_VALUES,
    ROOT,
    by_kind,
    one,
    run,
    template,
)

README = (ROOT / "README.md").read_text()
VALUE_SETS = {
    "defaults": [],
    "production": ["-f", str(PRODUCTION_VALUES)],
    "everything-on": [
        "--set", "autoscaling.enabled=true",
        "--set", "podDisruptionBudget.enabled=true",
        "--set", "networkPolicy.enabled=true",
        "--set", "serviceMonitor.enabled=true",
        "--set", "dashboards.enabled=true",
        "--set", "openai.apiKey=sk-test",
        "--set", "adminToken.value=admin-test",
        "--set", "backendSecret.url=redis://:pw@redis:6379/0",
        "--set", "clientAuth.keys=team-a:sk-a",
        "--set", "clientAuth.keysFileSecret.name=kallm-clients",
        "--set", "config.maxTtl=1h",
    ],
    "sqlite-on-pvc": [
        "--set", "persistence.enabled=true",
        "--set", "persistence.storageClass=standard",
    ],
}  # fmt: skip


def _readme_table(heading: str) -> list[list[str]]:
    """Rows of the first table after `heading`, cells stripped of backticks."""
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set(cells[0]) <= {"-", " "} and cells[0] not in ("variable", "series"):
                rows.append(cells)
        elif rows:
            break
    return rows


def readme_settings() -> dict[str, str]:
    """README's configuration table: variable -> default cell."""
    return {row[0].strip("`"): row[1] for row in _readme_table("## Configuration")}


def readme_metrics() -> set[str]:
    return {row[0].strip("`") for row in _readme_table("**Metrics**")}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def checksum(docs: list[dict[str, Any]]) -> str:
    return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


@pytest.mark.parametrize("values", ["defaults", "production"])
def test_helm_lint_strict(helm, values):
    extra = ["-f", str(PRODUCTION_VALUES)] if values == "production" else []
    out = run([helm, "lint", "--strict", str(CHART), *extra]).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_rendered_manifests_validate_strictly(helm, kubernetes_validate, tmp_path, values):
    docs = template(helm, *VALUE_SETS[values])
    core = [d for d in docs if d["kind"] != "ServiceMonitor"]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    result = run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION,
         str(manifest)],
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for doc in core:
        assert f"{doc['kind'].lower()}/{doc['metadata']['name']}" in result.stdout


@pytest.mark.parametrize("values", ["defaults", "production"])
def test_kubectl_reads_every_rendered_object(helm, kubectl, tmp_path, values):
    """kubectl's own decoder (offline: --local) accepts the chart as it would at apply time."""
    docs = template(helm, *VALUE_SETS[values])
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = run([kubectl, "label", "--local", "-f", str(manifest), "checked=yes", "-o", "name"])
    read = {line.split("/", 1)[1] for line in result.stdout.split()}
    assert read == {doc["metadata"]["name"] for doc in docs}


def test_validator_rejects_unknown_fields(helm, kubernetes_validate, tmp_path):
    """Guards the test above: strict validation does catch a misplaced field."""
    deployment = one(template(helm), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    result = run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION,
         str(manifest)],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0


def test_service_monitor_shape(helm):
    docs = template(helm, "-f", str(PRODUCTION_VALUES))
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["namespace"] == "ai"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": ["ai"]}
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    for key in ("interval", "scrapeTimeout"):
        assert re.fullmatch(r"(\d+(ms|s|m|h))+", endpoint[key]), endpoint[key]


def rendered_settings(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    """What kallm's environment gets: the ConfigMap, then the container's own env."""
    settings: dict[str, str | None] = dict(one(docs, "ConfigMap")["data"])
    settings.update({e["name"]: e.get("value") for e in container(docs).get("env") or []})
    return settings


# Where the chart means to differ from kallm's own default: in a cluster, watch policies.
CHART_DEFAULTS = {"KALLM_WATCH_POLICIES": "true"}


def test_defaults_match_readme(helm):
    rendered = rendered_settings(template(helm))
    settings = readme_settings()
    assert len(settings) >= 16
    for name, default in settings.items():
        literal = re.fullmatch(r"`([^`]*)`", default)
        if name in CHART_DEFAULTS:
            assert rendered.get(name) == CHART_DEFAULTS[name], name
        elif literal and literal.group(1) in settings:  # follows another setting: unset
            assert name not in rendered, name
        elif literal:
            assert rendered.get(name) == literal.group(1), name
        else:  # unset, calibrated or built in: kallm picks its own default
            assert name not in rendered, name


def test_every_readme_setting_can_be_set(helm):
    docs = template(
        helm,
        "--set", "config.similarityThreshold=0.9",
        "--set", "config.verifierThreshold=0.7",
        "--set", "config.verifierModel=/models/pair",
        "--set", "config.pricesFile=/etc/kallm/prices.json",
        "--set", "openai.apiKey=sk-test",
        "--set", "anthropic.apiKey=sk-ant-test",
        "--set", "gemini.existingSecret=google-keys",
        "--set", "adminToken.value=token",
        "--set", "policies.kubeApiUrl=https://kubernetes.example:6443",
        "--set", "config.maxTtl=1h",
        "--set", "clientAuth.keys=team-a:sk-a",
        "--set", "clientAuth.keysFileSecret.name=kallm-clients",
    )  # fmt: skip
    config = one(docs, "ConfigMap")["data"]
    assert config["KALLM_SIMILARITY_THRESHOLD"] == "0.9"
    assert config["KALLM_VERIFIER_THRESHOLD"] == "0.7"
    missing = set(readme_settings()) - set(rendered_settings(docs))
    assert not missing


def test_deployment_security_probes_and_volumes(helm):
    docs = template(helm)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["ports"][0]["containerPort"] == 8080
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "/data" in mounts
    (spread,) = pod["topologySpreadConstraints"]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert spread["labelSelector"]["matchLabels"] == selector
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert one(docs, "Service")["spec"]["selector"] == selector


@pytest.mark.parametrize(
    ("args", "period", "delay", "grace"),
    [
        ([], 30, "0", "25"),
        (["--set", "terminationGracePeriodSeconds=45"], 45, "0", "40"),
        (["--set", "shutdown.delaySeconds=5"], 30, "5", "20"),
        (["--set", "shutdown.graceSeconds=10"], 30, "0", "10"),
    ],
)
def test_drain_fits_in_the_grace_period(helm, args, period, delay, grace):
    docs = template(helm, *args)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == period
    env = rendered_settings(docs)
    assert (env["KALLM_SHUTDOWN_DELAY"], env["KALLM_SHUTDOWN_GRACE"]) == (delay, grace)


def test_drain_longer_than_the_grace_period_is_refused(helm):
    result = run(
        [helm, "template", "kallm", str(CHART), "--set", "shutdown.graceSeconds=30"],
        check=False,
    )
    assert result.returncode != 0
    assert "must be below terminationGracePeriodSeconds" in result.stderr


def test_optional_objects_are_off_by_default(helm):
    kinds = {d["kind"] for d in template(helm)}
    assert kinds == {
        "ServiceAccount", "ConfigMap", "Service", "Deployment", "ClusterRole", "ClusterRoleBinding"
    }  # fmt: skip


def test_the_policy_watcher_gets_its_permissions_token_and_settings(helm):
    docs = template(helm)
    role = one(docs, "ClusterRole")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"semanticcachepolicies", "semanticcachepolicies/status"}
    binding = one(docs, "ClusterRoleBinding")
    account = one(docs, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["KALLM_WATCH_POLICIES"]["value"] == "true" and "POD_NAME" in env

    mapping = template(helm, "--set", "policies.namespaceFromPodIP=true")
    rules = one(mapping, "ClusterRole")["rules"]
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]} in rules
    env = {
        e["name"]: e
        for e in one(mapping, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KALLM_NAMESPACE_FROM_POD_IP"]["value"] == "true"

    off = template(helm, "--set", "policies.watch=false")
    assert {d["kind"] for d in off}.isdisjoint({"ClusterRole", "ClusterRoleBinding"})
    pod = one(off, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_production_values(helm):
    docs = template(helm, "-f", str(PRODUCTION_VALUES))
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1
    one(docs, "NetworkPolicy")
    one(docs, "ServiceMonitor")
    config = [d for d in by_kind(docs, "ConfigMap") if "KALLM_BACKEND" in d.get("data", {})]
    assert config[0]["data"]["KALLM_BACKEND"].startswith("redis://")
    env = {e["name"]: e for e in container(docs)["env"]}
    ref = env["KALLM_BACKEND"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "kallm-backend", "key": "KALLM_BACKEND"}
    assert not by_kind(docs, "Secret")  # every secret is an existing one


def test_secret_created_or_existing(helm):
    docs = template(
        helm,
        "--set", "openai.apiKey=sk-abc", "--set", "adminToken.value=t0k",
        "--set", "anthropic.apiKey=sk-ant", "--set", "gemini.apiKey=AIza",
    )  # fmt: skip
    secret = one(docs, "Secret")
    names = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "KALLM_ADMIN_TOKEN"}
    assert set(secret["data"]) == names
    env = {e["name"]: e for e in container(docs)["env"]}
    for name in names:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": name}
    docs = template(
        helm,
        "--set", "openai.existingSecret=mine", "--set", "openai.existingSecretKey=key",
        "--set", "adminToken.existingSecret=admin", "--set", "openai.apiKey=ignored",
    )  # fmt: skip
    assert not by_kind(docs, "Secret")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "key"}
    assert env["KALLM_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "admin"


def test_persistence_uses_sqlite_on_the_volume(helm):
    docs = template(helm, *VALUE_SETS["sqlite-on-pvc"])
    pvc = one(docs, "PersistentVolumeClaim")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert one(docs, "ConfigMap")["data"]["KALLM_BACKEND"] == "sqlite:////data/kallm.db"


def test_sqlite_refuses_several_replicas(helm):
    result = run(
        [helm, "template", "kallm", str(CHART), "--set", "persistence.enabled=true",
         "--set", "replicaCount=3"],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "one replica" in result.stderr


def test_checksum_rolls_pods_on_config_and_secret_changes(helm):
    base = checksum(template(helm))
    assert checksum(template(helm)) == base
    sums = {
        base,
        checksum(template(helm, "--set", "config.cacheTtl=1h")),
        checksum(template(helm, "--set", "openai.apiKey=sk-1")),
        checksum(template(helm, "--set", "openai.apiKey=sk-2")),
    }
    assert len(sums) == 4
    assert re.fullmatch(r"[0-9a-f]{64}", base)


def test_dashboard_uses_only_kallm_metrics(helm):
    docs = template(helm, "--set", "dashboards.enabled=true")
    dashboard_map = next(
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    )
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard_map["data"].values()
    dashboard = json.loads(text)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    exposed = readme_metrics()
    assert "kallm_requests_total" in exposed and len(exposed) >= 9
    allowed = exposed | {m + s for m in exposed for s in ("_bucket", "_sum", "_count")}
    used = {name for e in exprs for name in re.findall(r"\bkallm_[a-z_]+", e)}
    templating = json.dumps(dashboard["templating"])
    used |= set(re.findall(r"\bkallm_[a-z_]+", templating))
    assert used <= allowed, used - allowed
    for needed in (
        "kallm_requests_total",
        "kallm_saved_usd_total",
        "kallm_saved_tokens_total",
        "kallm_request_duration_seconds_bucket",
        "kallm_candidate_similarity_bucket",
        "kallm_store_up",
        "kallm_cache_errors_total",
    ):
        assert needed in used, needed
    assert any("histogram_quantile" in e and "outcome" in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def render_notes(helm: str, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` would print it (helm template leaves the notes out)."""
    chart = tmp_path / f"kallm-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    Path(chart / "templates" / "_notes_test.tpl").write_text(
        '{{- define "notes.test" }}' + notes + "{{- end }}"
    )
    (chart / "templates" / "notes-test.yaml").write_text(
        'notes: {{ include "notes.test" . | quote }}\n'
    )
    out = run(
        [helm, "template", "kallm", str(chart), "--namespace", "ai",
         "--show-only", "templates/notes-test.yaml", *args]
    ).stdout  # fmt: skip
    text: str = yaml.safe_load(out)["notes"]
    return text


def test_notes_tell_how_to_point_a_client(helm, tmp_path):
    text = render_notes(helm, tmp_path)
    assert 'OpenAI(base_url="http://kallm.ai.svc.cluster.local:8080/v1")' in text
    assert "port-forward svc/kallm" in text


def test_connection_limits_answer_size_and_open_relay_have_kallm_defaults(helm):
    settings = rendered_settings(template(helm))
    assert settings["KALLM_MAX_HEADER_SIZE"] == "65536"
    assert settings["KALLM_HEADER_TIMEOUT"] == "10"
    assert settings["KALLM_KEEPALIVE_TIMEOUT"] == "15"
    assert settings["KALLM_MAX_CONNECTIONS"] == "1000"
    assert settings["KALLM_MAX_ANSWER_SIZE"] == "2097152"
    assert settings["KALLM_INSECURE_OPEN_RELAY"] == "false"
    for unset in ("KALLM_MAX_TTL", "KALLM_CLIENT_KEYS", "KALLM_CLIENT_KEYS_FILE"):
        assert unset not in settings, unset  # kallm's default: the cache TTL; no client keys
    settings = rendered_settings(
        template(
            helm,
            "--set", "config.maxHeaderSize=16384", "--set", "config.headerTimeout=5s",
            "--set", "config.keepaliveTimeout=75", "--set", "config.maxConnections=4000",
            "--set", "config.maxAnswerSize=1048576", "--set", "config.maxTtl=30m",
            "--set", "clientAuth.insecureOpenRelay=true",
        )
    )  # fmt: skip
    assert settings["KALLM_MAX_HEADER_SIZE"] == "16384"
    assert settings["KALLM_HEADER_TIMEOUT"] == "5s"
    assert settings["KALLM_KEEPALIVE_TIMEOUT"] == "75"
    assert settings["KALLM_MAX_CONNECTIONS"] == "4000"
    assert settings["KALLM_MAX_ANSWER_SIZE"] == "1048576"
    assert settings["KALLM_MAX_TTL"] == "30m"
    assert settings["KALLM_INSECURE_OPEN_RELAY"] == "true"


def test_client_keys_go_in_a_secret_created_or_existing(helm):
    docs = template(helm, "--set", "clientAuth.keys=team-a:sk-a\\,team-b:sk-b")  # , escaped
    secret = one(docs, "Secret")
    assert secret["data"] == {"KALLM_CLIENT_KEYS": "dGVhbS1hOnNrLWEsdGVhbS1iOnNrLWI="}
    assert "KALLM_CLIENT_KEYS" not in one(docs, "ConfigMap")["data"]
    env = {e["name"]: e for e in container(docs)["env"]}
    ref = env["KALLM_CLIENT_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "KALLM_CLIENT_KEYS"}

    docs = template(
        helm,
        "--set", "clientAuth.existingSecret=clients", "--set", "clientAuth.existingSecretKey=k",
        "--set", "clientAuth.keys=ignored:when-existing",
    )  # fmt: skip
    assert not by_kind(docs, "Secret")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["KALLM_CLIENT_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "clients", "key": "k"}
    assert checksum(template(helm, "--set", "clientAuth.keys=a:1")) != checksum(
        template(helm, "--set", "clientAuth.keys=a:2")
    )


def test_a_client_keys_file_is_a_secret_key_mounted_read_only(helm):
    docs = template(
        helm,
        "--set", "clientAuth.keysFileSecret.name=kallm-clients",
        "--set", "clientAuth.keysFileSecret.key=tenants.json",
    )  # fmt: skip
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "kallm-clients"
    assert volume["secret"]["items"] == [{"key": "tenants.json", "path": "tenants.json"}]
    assert volume["secret"]["defaultMode"] == 0o440
    (mount,) = [m for m in container(docs)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    path = rendered_settings(docs)["KALLM_CLIENT_KEYS_FILE"]
    assert path == mount["mountPath"] + "/tenants.json"
    assert not by_kind(docs, "Secret")  # the chart never holds that file itself

    pod = one(template(helm), "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "secret" in v]


def test_production_takes_client_keys_from_a_secret_and_is_no_open_relay(helm):
    docs = template(helm, "-f", str(PRODUCTION_VALUES))
    env = {e["name"]: e for e in container(docs)["env"]}
    ref = env["KALLM_CLIENT_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "kallm-clients", "key": "KALLM_CLIENT_KEYS"}
    (config,) = [d for d in by_kind(docs, "ConfigMap") if "KALLM_PORT" in d["data"]]
    assert config["data"]["KALLM_INSECURE_OPEN_RELAY"] == "false"


OPEN_WARNING = "WARNING: kallm holds provider API keys but has no way to know its callers"
RELAY_WARNING = "WARNING: clientAuth.insecureOpenRelay is on"


@pytest.mark.parametrize(
    ("args", "warnings"),
    [
        ([], set()),  # no provider key: kallm forwards each caller's own
        (["--set", "openai.apiKey=sk-x"], {OPEN_WARNING}),
        (["--set", "gemini.existingSecret=g"], {OPEN_WARNING}),
        (["--set", "openai.apiKey=sk-x", "--set", "clientAuth.keys=a:k"], set()),
        (["--set", "openai.apiKey=sk-x", "--set", "clientAuth.existingSecret=c"], set()),
        (["--set", "openai.apiKey=sk-x", "--set", "clientAuth.keysFileSecret.name=f"], set()),
        (["--set", "openai.apiKey=sk-x", "--set", "policies.namespaceFromPodIP=true"], set()),
        (["--set", "openai.apiKey=sk-x", "--set", "config.host=127.0.0.1"], set()),
        (["--set", "openai.apiKey=sk-x", "--set", "clientAuth.insecureOpenRelay=true"],
         {RELAY_WARNING}),
        (["-f", str(PRODUCTION_VALUES)], set()),
    ],
)  # fmt: skip
def test_notes_warn_when_anyone_could_spend_the_provider_keys(helm, tmp_path, args, warnings):
    text = render_notes(helm, tmp_path, *args)
    assert {w for w in (OPEN_WARNING, RELAY_WARNING) if w in text} == warnings


def test_the_chart_icon_is_a_file_of_this_repository():
    icon = yaml.safe_load((CHART / "Chart.yaml").read_text())["icon"]
    prefix = "https://raw.githubusercontent.com/kallm/kallm/main/"
    assert icon.startswith(prefix) and (ROOT / icon.removeprefix(prefix)).is_file()
