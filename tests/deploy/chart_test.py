"""The Helm chart, checked without Helm (not installable here): YAML of the chart's own files
lints, every .Values path the templates use exists in values.yaml, the dashboard packaged in the
chart is byte for byte the one in deploy/grafana/, and, for several value sets, the chart renders
(tests/deploy/chartrender: Go's text/template with sprig, as Helm) into objects that Kubernetes'
own schemas accept and values that the chart's values.schema.json accepts
(tests/peers/validate_chart.mjs); values the schema must refuse are refused.

usage: chart_test.py SOURCE_DIR"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

root = pathlib.Path(sys.argv[1])
chart = root / "helm" / "squeeze"
failures = []

lint = subprocess.run(
    ["yamllint", "-d", "{extends: relaxed, rules: {line-length: {max: 160}}}",
     str(chart / "Chart.yaml"), str(chart / "values.yaml"),
     str(root / "deploy" / "prometheus" / "alerts.yml")],
    capture_output=True, text=True)
if lint.returncode != 0:
    failures.append("yamllint:\n" + lint.stdout + lint.stderr)

values = yaml.safe_load((chart / "values.yaml").read_text())
chart_meta = yaml.safe_load((chart / "Chart.yaml").read_text())
for key in ("apiVersion", "name", "version", "appVersion"):
    if key not in chart_meta:
        failures.append(f"Chart.yaml: missing {key}")


def has_path(tree, path):
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


for template in sorted(p for p in (chart / "templates").rglob("*") if p.is_file()):
    text = template.read_text()
    if "{{" in re.sub(r"{{.*?}}", "", text):
        failures.append(f"{template.name}: an unclosed {{{{")
    opened = len(re.findall(r"{{-?\s*(if|range|with|define)\b", text))
    closed = len(re.findall(r"{{-?\s*end\b", text))
    if opened != closed:
        failures.append(f"{template.name}: {opened} blocks opened, {closed} closed")
    for match in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
        path = match.group(1).strip(".").split(".")
        if not has_path(values, path):
            failures.append(f"{template.name}: .Values.{'.'.join(path)} is not in values.yaml")
    for match in re.finditer(r'\.Files\.Get "([^"]+)"', text):
        if not (chart / match.group(1)).is_file():
            failures.append(f"{template.name}: {match.group(1)} is not in the chart")

packaged = (chart / "dashboards" / "squeeze-dashboard.json").read_bytes()
source = (root / "deploy" / "grafana" / "squeeze-dashboard.json").read_bytes()
if packaged != source:
    failures.append("helm/squeeze/dashboards/squeeze-dashboard.json differs from "
                    "deploy/grafana/squeeze-dashboard.json (copy it again)")


# Rendering and schema validation.
work = pathlib.Path(tempfile.mkdtemp(prefix="chart_test_"))
renderer = work / "chartrender"
build = subprocess.run(
    ["go", "build", "-o", str(renderer), "."], cwd=root / "tests" / "deploy" / "chartrender",
    env={**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode",
         "GOCACHE": str(work / "gocache"), "GOFLAGS": ""},
    capture_output=True, text=True)
if build.returncode != 0:
    failures.append("chartrender does not build:\n" + build.stderr)
    print("\n".join(failures))
    sys.exit(1)


def render(name, overrides):
    """Renders with `overrides` over values.yaml; returns (rendered JSON or None, problems)."""
    files = []
    for i, o in enumerate(overrides):
        path = work / f"{name}-{i}.yaml"
        path.write_text(yaml.safe_dump(o))
        files += ["-f", str(path)]
    r = subprocess.run([str(renderer), "-chart", str(chart), "-name", "prod"] + files,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, [f"{name}: does not render: {r.stderr.strip()}"]
    v = subprocess.run(["node", str(root / "tests" / "peers" / "validate_chart.mjs"),
                        str(chart / "values.schema.json")],
                       input=r.stdout, capture_output=True, text=True)
    problems = [f"{name}: {line}" for line in v.stdout.splitlines()[:-1]]
    if v.returncode != 0 and not problems:
        problems = [f"{name}: validator failed: {v.stderr.strip()}"]
    return json.loads(r.stdout), problems


def objects(rendered, kind):
    return [o["object"] for o in rendered["objects"] if o["object"]["kind"] == kind]


scenarios = {
    "defaults": [],
    "postgres-tls-monitoring": [{
        "coordinator": {"postgres": {"enabled": True, "replicas": 3}},
        "tls": {"enabled": True, "clientCaSecret": "squeeze-client-ca"},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }],
    "eight-gpus-private-registry": [{
        "image": {"registry": "registry.internal:5000",
                  "worker": {"repository": "ml/squeeze-worker", "tag": "0.2.0"},
                  "coordinator": {"repository": "ml/squeeze-coordinator",
                                  "digest": "sha256:" + "ab" * 32}},
        "worker": {"gpusPerWorker": 8, "replicas": 4},
    }],
    "open-small": [{
        "auth": {"tokensSecret": "", "workerTokenSecret": ""},
        "networkPolicy": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
        "metrics": {"dashboard": {"enabled": False}}, "serviceAccount": {"create": False,
                                                                         "name": "default"},
        "store": {"root": "s3://bucket/squeeze", "endpoint": "http://minio:9000",
                  "pathStyle": True},
    }],
}
rendered = {}
for name, overrides in scenarios.items():
    out, problems = render(name, overrides)
    failures += problems
    rendered[name] = out

if rendered["defaults"]:
    d = rendered["defaults"]
    [worker] = [s for s in objects(d, "StatefulSet") if s["metadata"]["name"].endswith("-worker")]
    containers = worker["spec"]["template"]["spec"]["containers"]
    if [c["image"] for c in containers] != ["squeeze/worker:" + chart_meta["appVersion"]]:
        failures.append(f"defaults: worker image is {[c['image'] for c in containers]}")
    probes = containers[0]
    if probes["livenessProbe"]["httpGet"]["path"] != "/healthz":
        failures.append("defaults: the worker's liveness probe is not /healthz")
    if probes["readinessProbe"]["httpGet"]["path"] != "/readyz":
        failures.append("defaults: the worker's readiness probe is not /readyz")
    tests = [p for p in objects(d, "Pod")
             if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if len(tests) != 1 or "health" not in tests[0]["spec"]["containers"][0]["args"]:
        failures.append("defaults: no `helm test` pod running squeezectl health")
    for kind in ("StatefulSet",):
        for s in objects(d, kind):
            sc = s["spec"]["template"]["spec"]["securityContext"]
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                failures.append(f"defaults: {s['metadata']['name']} has no RuntimeDefault seccomp")

if rendered["eight-gpus-private-registry"]:
    d = rendered["eight-gpus-private-registry"]
    [worker] = [s for s in objects(d, "StatefulSet") if s["metadata"]["name"].endswith("-worker")]
    containers = worker["spec"]["template"]["spec"]["containers"]
    if len(containers) != 8:
        failures.append(f"8 GPUs: {len(containers)} worker containers, want 8")
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in containers]
    if gpus != [1] * 8:
        failures.append(f"8 GPUs: GPUs per container {gpus}, want one each")
    ports = sorted(p["containerPort"] for c in containers for p in c["ports"])
    if len(set(ports)) != 16:
        failures.append(f"8 GPUs: container ports collide: {ports}")
    if containers[3]["image"] != "registry.internal:5000/ml/squeeze-worker:0.2.0":
        failures.append(f"8 GPUs: worker image {containers[3]['image']}")
    [coordinator] = [s for s in objects(d, "StatefulSet")
                     if s["metadata"]["name"].endswith("-coordinator")]
    image = coordinator["spec"]["template"]["spec"]["containers"][0]["image"]
    if image != "registry.internal:5000/ml/squeeze-coordinator@sha256:" + "ab" * 32:
        failures.append(f"digest: coordinator image {image}")

if rendered["postgres-tls-monitoring"]:
    d = rendered["postgres-tls-monitoring"]
    if len(objects(d, "ServiceMonitor")) != 1:
        failures.append("postgres-tls-monitoring: no ServiceMonitor")

# Values the schema must refuse, each naming what is wrong.
refused = {
    "zero GPUs": ([{"worker": {"gpusPerWorker": 0}}], "gpusPerWorker"),
    "a typo": ([{"worker": {"gpuPerWorker": 2}}], "additional properties"),
    "a tag with a space": ([{"image": {"worker": {"repository": "squeeze/worker",
                                                   "tag": "latest version"}}}], "tag"),
    "a password in conninfo": ([{"coordinator": {"postgres": {
        "conninfo": "host=db password=hunter2"}}}], "conninfo"),
    "a port out of range": ([{"coordinator": {"port": 70000}}], "port"),
}
for name, (overrides, expect) in refused.items():
    _, problems = render(name.replace(" ", "-"), overrides)
    if not any(expect in p for p in problems):
        failures.append(f"the schema let {name} through: {problems}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("chart checks passed: " + ", ".join(
    f"{n} ({len(r['objects'])} objects)" for n, r in rendered.items() if r))
