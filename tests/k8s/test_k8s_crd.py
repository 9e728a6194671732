"""The SemanticCachePolicy CRD: valid for Kubernetes 1.30, structural, and its own schema
accepts the example policies and rejects the invalid one."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from k8s_helpers import CRD_FILE, EXAMPLES, INSTALL_HINT, KUBERNETES_VERSION, run

try:
    import jsonschema
except ImportError:  # installed with kubernetes-validate
    jsonschema = None

SPEC_FIELDS = {
    "enabled",
    "similarityThreshold",
    "verifierThreshold",
    "ttl",
    "maxEntries",
    "bypass",
    "shareAcrossNamespaces",
}
ENDPOINTS = ["chat.completions", "responses", "messages", "gemini", "embeddings", "completions"]
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILE.read_text())


def version() -> dict[str, Any]:
    (v1alpha1,) = crd()["spec"]["versions"]
    assert v1alpha1["name"] == "v1alpha1"
    return v1alpha1


def schema() -> dict[str, Any]:
    return version()["schema"]["openAPIV3Schema"]


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from nodes(node["items"], f"{path}[]")


def closed(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    """The schema as the API server applies it with strict field validation: an object's
    unknown fields are errors (metadata is checked by the server itself)."""
    node = copy.deepcopy(node)
    if path != ".metadata" and "properties" in node:
        node["additionalProperties"] = False
    for name, child in node.get("properties", {}).items():
        node["properties"][name] = closed(child, f"{path}.{name}")
    if "items" in node:
        node["items"] = closed(node["items"], f"{path}[]")
    return node


def validator(node: dict[str, Any]) -> Any:
    if jsonschema is None:
        pytest.fail(f"jsonschema is not installed: {INSTALL_HINT}", pytrace=False)
    return jsonschema.Draft4Validator(node)


def errors(obj: dict[str, Any]) -> list[str]:
    validator_ = validator(closed(schema()))
    found = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator_.iter_errors(obj)
    ]
    group, ver = crd()["spec"]["group"], version()["name"]
    if obj.get("apiVersion") != f"{group}/{ver}":
        found.append(f"apiVersion {obj.get('apiVersion')!r}")
    if obj.get("kind") != crd()["spec"]["names"]["kind"]:
        found.append(f"kind {obj.get('kind')!r}")
    return found


def policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kallm.io/v1alpha1",
        "kind": "SemanticCachePolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    }


def test_crd_validates_strictly(kubernetes_validate):
    result = run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION,
         str(CRD_FILE)],
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_crd_names_scope_and_status():
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "semanticcachepolicies.kallm.io"
    assert spec["group"] == "kallm.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "SemanticCachePolicy"
    assert spec["names"]["plural"] == "semanticcachepolicies"
    v = version()
    assert v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in v["additionalPrinterColumns"]}
    assert columns["Similarity"] == ".spec.similarityThreshold"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_schema_is_structural_with_ranges_enums_and_defaults():
    root = schema()
    props = root["properties"]["spec"]["properties"]
    assert set(props) == SPEC_FIELDS
    for path, node in nodes(root):
        assert "type" in node, f"{path or 'root'} has no type (not structural)"
        assert "additionalProperties" not in node or "properties" not in node, path
        if "default" in node:  # defaults must pass their own schema
            validator(node).validate(node["default"])
    assert props["enabled"]["default"] is True
    assert props["shareAcrossNamespaces"]["default"] is False
    for name in ("similarityThreshold", "verifierThreshold"):
        assert (props[name]["minimum"], props[name]["maximum"]) == (0, 1)
    assert props["maxEntries"]["type"] == "integer" and props["maxEntries"]["minimum"] == 1
    bypass = props["bypass"]["properties"]
    assert bypass["endpoints"]["items"]["enum"] == ENDPOINTS
    assert set(bypass["header"]["properties"]) == {"name", "value"}
    status = root["properties"]["status"]["properties"]
    assert {"observedGeneration", "appliedBy", "conditions"} <= set(status)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_examples(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        found = errors(doc)
        if "invalid" in path.name:
            assert found, f"{path.name} should be rejected"
        else:
            assert not found, found


def test_examples_cover_valid_and_invalid():
    names = [p.name for p in EXAMPLE_FILES]
    assert sum("invalid" in n for n in names) >= 1
    assert sum("invalid" not in n for n in names) >= 2


def test_invalid_example_fails_on_the_threshold():
    (path,) = [p for p in EXAMPLE_FILES if "invalid" in p.name]
    found = errors(yaml.safe_load(path.read_text()))
    assert any(e.startswith("spec.similarityThreshold") for e in found), found


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ({}, True),
        ({"similarityThreshold": 0, "verifierThreshold": 1}, True),
        ({"similarityThreshold": -0.1}, False),
        ({"verifierThreshold": 1.01}, False),
        ({"ttl": "90s"}, True),
        ({"ttl": "1h30m"}, True),
        ({"ttl": "1.5h"}, True),
        ({"ttl": "250ms"}, True),
        ({"ttl": "1d"}, False),
        ({"ttl": ""}, False),
        ({"maxEntries": 1}, True),
        ({"maxEntries": 0}, False),
        ({"maxEntries": 2.5}, False),
        ({"enabled": "yes"}, False),
        ({"bypass": {"endpoints": ENDPOINTS, "models": ["gpt-4o"]}}, True),
        ({"bypass": {"endpoints": ["images"]}}, False),
        ({"bypass": {"header": {"name": "X-No-Cache", "value": "1"}}}, True),
        ({"bypass": {"header": {"value": "1"}}}, False),
        ({"bypass": {"header": {"name": "bad header"}}}, False),
        ({"shareAcrossNamespaces": True}, True),
        ({"similarity": 0.9}, False),  # unknown field
    ],
)
def test_schema_rules(spec, ok):
    found = errors(policy(**spec))
    assert (not found) is ok, found


def test_status_shape():
    obj = policy()
    obj["status"] = {
        "observedGeneration": 3,
        "appliedBy": ["kallm-7d9f-abcde", "kallm-7d9f-fghij"],
        "conditions": [
            {
                "type": "Applied",
                "status": "True",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "reason": "Applied",
                "message": "applied by 2 of 2 replicas",
            }
        ],
    }
    assert not errors(obj)
    obj["status"]["conditions"][0]["status"] = "Maybe"
    assert errors(obj)
