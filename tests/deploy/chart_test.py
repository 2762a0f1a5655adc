"""Checks what can be checked of the Helm chart without Helm: YAML of the chart's own files
lints, every .Values path the templates use exists in values.yaml, the templates' braces and
if/range/with blocks balance, and the dashboard packaged in the chart is byte for byte the one in
deploy/grafana/."""
import pathlib
import re
import subprocess
import sys

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


for template in sorted((chart / "templates").glob("*")):
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

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("chart checks passed")
