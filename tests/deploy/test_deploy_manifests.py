"""The Kubernetes manifests: schemas (Kubernetes API via kubernetes-validate; the Prometheus
Operator's CRDs vendored in schemas/), what kubectl does offline, the wiring between objects, and
the DaemonSet's security settings."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploykit import CRD_KINDS, KUBE, SCHEMAS, manifest_files, manifests, the
from fake_apiserver import fake_apiserver
from support import need_tool

#: The oldest Kubernetes with securityContext.appArmorProfile (1.30), and the newest bundled.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CAPABILITIES = {"SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN"}
WRITABLE_HOST_PATHS = {"/sys/kernel/tracing"}
PORT = 9847


def builtin_objects() -> list[tuple[str, dict]]:
    return [(f"{p.name}:{d['kind']}", d) for p, d in manifests() if d["kind"] not in CRD_KINDS]


# -- schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), builtin_objects(), ids=[w for w, _ in builtin_objects()])
def test_builtin_kinds_validate_against_the_kubernetes_api_schema(where, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_kubernetes_schema_validation_can_fail():
    ds = copy.deepcopy(the("DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)
    ds = copy.deepcopy(the("DaemonSet"))
    ds["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)


def crd_schema(kind: str) -> dict:
    """The vendored openAPIV3Schema, made strict the way the API server treats a structural schema:
    unknown fields are not kept (pruned, or refused with strict field validation), so every object
    with `properties` gets additionalProperties: false unless it says otherwise."""
    doc = json.loads((SCHEMAS / f"{kind.lower()}.monitoring.coreos.com_v1.json").read_text())
    assert doc["source"]["repository"] == "prometheus-operator/prometheus-operator" and len(doc["source"]["commit"]) == 40

    def strict(node: object) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):  # fmt: skip
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    schema = doc["openAPIV3Schema"]
    strict(schema)
    return schema


def validate_crd(doc: dict) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    jsonschema.Draft7Validator(crd_schema(doc["kind"])).validate(doc)


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_operator_kinds_validate_against_the_vendored_crd_schemas(kind):
    validate_crd(the(kind))


def test_the_crd_schema_validation_can_fail():
    sm = copy.deepcopy(the("ServiceMonitor"))
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(sm)
    sm = copy.deepcopy(the("ServiceMonitor"))
    del sm["spec"]["selector"]
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(sm)
    pr = copy.deepcopy(the("PrometheusRule"))
    pr["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(pr)


# -- kubectl, offline -------------------------------------------------------------------------------


def kubectl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need_tool("kubectl"), *args], capture_output=True, text=True, check=False, timeout=120)


def test_kubectl_kustomize_builds_every_object_into_the_namespace():
    cp = kubectl("kustomize", str(KUBE))
    assert cp.returncode == 0, cp.stderr
    built = [d for d in yaml.safe_load_all(cp.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == \
        sorted((d["kind"], d["metadata"]["name"]) for _, d in manifests())  # fmt: skip
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in manifest_files()}
    for d in built:
        if d["kind"] == "Namespace":
            assert d["metadata"]["name"] == "badsum-system"
        else:
            assert d["metadata"]["namespace"] == "badsum-system", d["kind"]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_kubectl_decodes_each_manifest(path):
    cp = kubectl("label", "--local", "-f", str(path), "checked=yes", "-o", "json")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["metadata"]["labels"]["checked"] == "yes"


def kubeconfig(tmp_path, server: str) -> dict[str, str]:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "stand-in", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "stand-in", "user": "u"}}],
    }))  # fmt: skip
    # HOME too: kubectl caches discovery under ~/.kube.
    return {"KUBECONFIG": str(path), "HOME": str(tmp_path), "PATH": os.environ.get("PATH", os.defpath)}


def test_kubectl_apply_dry_run_client(tmp_path):
    """`kubectl apply --dry-run=client -k` against a stand-in server that answers discovery only
    (kubectl needs a server even for a client-side dry run); --validate=false because the schemas
    are checked above, offline."""
    expected = sorted(f"{d['kind'].lower()}/{d['metadata']['name']}" for _, d in manifests())
    with fake_apiserver() as (server, requests):
        cp = subprocess.run([need_tool("kubectl"), "apply", "--dry-run=client", "--validate=false", "-k", str(KUBE)],
                            capture_output=True, text=True, check=False, timeout=120, env=kubeconfig(tmp_path, server))  # fmt: skip
        assert cp.returncode == 0, cp.stderr
        created = sorted(re.sub(r"^(\w+)\.[\w.]+/", r"\1/", line.removesuffix(" created (dry run)"))
                         for line in cp.stdout.splitlines())  # fmt: skip
        assert created == expected
        # Each object was looked up where it belongs: in badsum-system.
        assert "/apis/apps/v1/namespaces/badsum-system/daemonsets/badsum-exporter" in requests
        # A kind the server does not serve is refused: the dry run is not vacuous.
        bad = tmp_path / "bad.yaml"
        ds = copy.deepcopy(the("DaemonSet"))
        ds["apiVersion"] = "apps/v1beta2"
        bad.write_text(yaml.safe_dump(ds))
        cp = subprocess.run([need_tool("kubectl"), "apply", "--dry-run=client", "--validate=false", "-f", str(bad)],
                            capture_output=True, text=True, check=False, timeout=120, env=kubeconfig(tmp_path, server))  # fmt: skip
        assert cp.returncode != 0 and "no matches for kind" in cp.stderr


# -- wiring -----------------------------------------------------------------------------------------


def container() -> dict:
    return the("DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def test_port_service_servicemonitor_and_probes_agree():
    ds, svc, sm = the("DaemonSet"), the("Service"), the("ServiceMonitor")
    c = container()
    assert c["args"] == ["exporter", "--listen", f"0.0.0.0:{PORT}"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port == {"metrics": PORT}
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("metrics", PORT, "metrics")]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("metrics", "/metrics")]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == the("ServiceAccount")["metadata"]["name"]


# -- security ----------------------------------------------------------------------------------------


def test_daemonset_security_settings():
    spec = the("DaemonSet")["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert not spec.get("hostIPC")
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert len(spec["containers"]) == 1 and not spec.get("initContainers")
    sc = container()["securityContext"]
    assert sc.get("privileged") is not True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES and len(sc["capabilities"]["add"]) == len(CAPABILITIES)
    limits, requests = container()["resources"]["limits"], container()["resources"]["requests"]
    assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys()


def test_no_host_path_is_writable_but_tracing():
    spec = the("DaemonSet")["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host_paths, "no hostPath volumes at all"
    writable = {host_paths[m["name"]] for m in container()["volumeMounts"]
                if m["name"] in host_paths and not m.get("readOnly")}  # fmt: skip
    assert writable == WRITABLE_HOST_PATHS
    # Nothing that would hand out the node wholesale.
    assert not {"/", "/proc", "/sys", "/var/run", "/run", "/etc", "/var/lib/kubelet"} & set(host_paths.values())
    # Every other volume is an emptyDir (the writable /tmp).
    others = [v for v in spec["volumes"] if "hostPath" not in v]
    assert others and all("emptyDir" in v for v in others)
    # Read-only mounts of directories that gain entries later propagate them into the pod.
    for m in container()["volumeMounts"]:
        if m.get("readOnly") and m["name"] in host_paths:
            assert m.get("mountPropagation") == "HostToContainer", m["name"]
            assert m["mountPropagation"] != "Bidirectional"


def test_every_capability_is_explained_in_the_daemonset_and_the_docs():
    text = (KUBE / "daemonset.yaml").read_text()
    docs = (KUBE.parents[1] / "docs" / "deploy.md").read_text()
    for cap in CAPABILITIES:
        line = text.index(f"- {cap}\n")
        assert text[:line].rstrip().splitlines()[-1].strip().startswith("#"), f"{cap} has no comment above it"
        assert f"| `{cap}` |" in docs, cap
