// Validates a rendered chart (tests/deploy/chartrender's JSON on stdin): the merged values against
// the chart's values.schema.json (Ajv, draft-07, as Helm does at install), and every object
// against Kubernetes' own OpenAPI schemas (kubernetes-models; the Prometheus Operator's for
// ServiceMonitor). Prints one line per problem and exits 1 if there is any.
//   chartrender -chart helm/squeeze | node tests/peers/validate_chart.mjs helm/squeeze/values.schema.json
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Ajv = require("ajv");

const rendered = JSON.parse(readFileSync(0, "utf8"));
const schema = JSON.parse(readFileSync(process.argv[2], "utf8"));
const problems = [];

const ajv = new Ajv({ allErrors: true, strict: false });
const validValues = ajv.compile(schema);
if (!validValues(rendered.values)) {
  for (const e of validValues.errors) problems.push(`values${e.instancePath}: ${e.message}`);
}

// apiVersion "apps/v1" -> module "kubernetes-models/apps/v1"; "v1" -> "kubernetes-models/v1".
async function modelFor(apiVersion, kind) {
  const group = apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
  const module =
    group === "monitoring.coreos.com"
      ? `@kubernetes-models/prometheus-operator/${apiVersion}`
      : `kubernetes-models/${apiVersion}`;
  const models = await import(module);
  if (!models[kind]) throw new Error(`${apiVersion} has no kind ${kind}`);
  return models[kind];
}

const names = new Set();
for (const { template, object } of rendered.objects) {
  const id = `${template}: ${object.kind}/${object.metadata?.name}`;
  const key = `${object.apiVersion}/${object.kind}/${object.metadata?.name}`;
  if (names.has(key)) problems.push(`${id}: rendered twice`);
  names.add(key);
  try {
    const Model = await modelFor(object.apiVersion, object.kind);
    new Model(object).validate();
  } catch (e) {
    problems.push(`${id}: ${e.message}`);
  }
}
for (const p of problems) console.log(p);
console.log(`${rendered.objects.length} objects, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
