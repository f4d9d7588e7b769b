// A real FHIR client (fhir-kit-client) against a running fhirgate: create, read, search, page,
// update, delete and a transaction; every returned resource is validated against the official
// R4 JSON schema with ajv. usage: node conformance.js BASE_URL SCHEMA. Prints TAP.
"use strict";
const fs = require("fs");
const path = require("path");
const { pathToFileURL } = require("url");
const Ajv = require("ajv");
const draft6 = require("ajv/dist/refs/json-schema-draft-06.json");

const [baseUrl, schemaPath] = process.argv.slice(2);
const ajv = new Ajv({ strict: false, allErrors: false, validateFormats: false });
ajv.addMetaSchema(draft6);
const schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
// The R4 schema names itself with draft-04's "id", which ajv 8 refuses.
if (schema.id && !schema.$id) {
  schema.$id = schema.id;
  delete schema.id;
}
const validate = ajv.compile(schema);
let client;
let n = 0, failed = 0;

function ok(cond, name, diag) {
  n++;
  console.log(`${cond ? "ok" : "not ok"} ${n} - ${name}`);
  if (!cond) {
    failed++;
    if (diag !== undefined) console.log(`# ${JSON.stringify(diag).slice(0, 2000)}`);
  }
}

function valid(res, name) {
  const good = validate(res);
  ok(good, `${name}: valid R4`, good ? undefined : validate.errors[0]);
  for (const e of (res && res.entry) || []) {
    if (e.resource && !validate(e.resource)) ok(false, `${name}: entry valid`, validate.errors[0]);
  }
}

async function main() {
  // fhir-kit-client 2 is ESM only, and NODE_PATH does not reach ESM imports.
  const entry = path.join(process.env.NODE_PATH, "fhir-kit-client", "dist", "index.js");
  const mod = await import(pathToFileURL(entry).href);
  const Client = mod.default || mod.Client;
  client = new Client({ baseUrl });
  const meta = await client.capabilityStatement();
  ok(meta.fhirVersion === "4.0.1", "fhirVersion 4.0.1", meta.fhirVersion);
  // The published R4 schema's fhirVersion enum stops at 4.0.0 (a known erratum): check the
  // rest of the statement.
  valid({ ...meta, fhirVersion: "4.0.0" }, "capabilities");
  const pat = { resourceType: "Patient", name: [{ family: "Kit", given: ["Fhir"] }],
                identifier: [{ system: "urn:kit", value: "k1" }], birthDate: "1990-01-01" };
  const created = await client.create({ resourceType: "Patient", body: pat });
  ok(created.id && created.meta.versionId === "1", "create", created);
  valid(created, "create");
  const read = await client.read({ resourceType: "Patient", id: created.id });
  ok(read.name[0].family === "Kit", "read", read);
  valid(read, "read");
  for (let i = 0; i < 5; i++)
    await client.create({ resourceType: "Patient", body: { ...pat, identifier: [{ system: "urn:kit", value: `p${i}` }] } });
  let page = await client.search({ resourceType: "Patient", searchParams: { family: "Kit", _count: 2 } });
  valid(page, "search");
  ok(page.total === 6 && page.entry.length === 2, "search total and page size", page.total);
  let seen = page.entry.length, pages = 1;
  while ((page = await client.nextPage({ bundle: page }))) {
    valid(page, `page ${++pages}`);
    seen += (page.entry || []).length;
    if (pages > 10) break;
  }
  ok(seen === 6, "nextPage reaches every match", seen);
  read.gender = "female";
  const updated = await client.update({ resourceType: "Patient", id: created.id, body: read });
  ok(updated.meta.versionId === "2" && updated.gender === "female", "update", updated);
  valid(updated, "update");
  const hist = await client.history({ resourceType: "Patient", id: created.id });
  ok(hist.entry.length === 2, "history", hist.entry.length);
  valid(hist, "history");
  const tx = await client.transaction({ body: { resourceType: "Bundle", type: "transaction", entry: [
    { fullUrl: "urn:uuid:0d8a4c4f-8a0e-4a4f-9c1e-6f7a52b9a001", resource: { ...pat, identifier: [{ system: "urn:kit", value: "tx" }] },
      request: { method: "POST", url: "Patient" } },
    { resource: { resourceType: "Observation", status: "final", code: { text: "x" },
                  subject: { reference: "urn:uuid:0d8a4c4f-8a0e-4a4f-9c1e-6f7a52b9a001" } },
      request: { method: "POST", url: "Observation" } }] } });
  valid(tx, "transaction");
  ok(tx.entry.every((e) => e.response.status.startsWith("201")), "transaction entries created", tx);
  const obsId = tx.entry[1].response.location.split("/")[1];
  const obs = await client.read({ resourceType: "Observation", id: obsId });
  ok(obs.subject.reference === tx.entry[0].response.location.split("/_history")[0], "reference resolved", obs.subject);
  await client.delete({ resourceType: "Patient", id: created.id });
  try {
    await client.read({ resourceType: "Patient", id: created.id });
    ok(false, "read after delete fails");
  } catch (err) {
    ok(err.response && err.response.status === 410, "read after delete: 410", err.message);
    valid(err.response.data, "410 OperationOutcome");
  }
}

main().then(() => {
  console.log(`1..${n}`);
  process.exit(failed ? 1 : 0);
}, (err) => {
  ok(false, `client error: ${err.message}`, err.response && err.response.data);
  console.log(`1..${n}`);
  process.exit(1);
});
