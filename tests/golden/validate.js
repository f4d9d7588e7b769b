// Validates FHIR R4 JSON files against the official R4 JSON schema with ajv: the file itself
// (a resource or a Bundle) and, for Bundles, every entry's resource on its own.
// usage: node validate.js SCHEMA FILE...   prints "ok FILE" or "FAIL FILE: why" per file;
// exit status 1 when any file fails.
"use strict";
const fs = require("fs");
const Ajv = require("ajv");
const draft6 = require("ajv/dist/refs/json-schema-draft-06.json");

const [schemaPath, ...files] = process.argv.slice(2);
const schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
// The R4 schema names itself with draft-04's "id"; ajv 8 wants "$id".
if (schema.id && !schema.$id) {
  schema.$id = schema.id;
  delete schema.id;
}
const ajv = new Ajv({ strict: false, allErrors: false, validateFormats: false });
ajv.addMetaSchema(draft6);
const validate = ajv.compile(schema);

function check(resource, where, problems) {
  if (!validate(resource)) {
    const e = validate.errors[0];
    problems.push(`${where}: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  }
}

let failed = 0;
for (const file of files) {
  const problems = [];
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    problems.push(`not JSON: ${err.message}`);
  }
  if (doc !== undefined) {
    check(doc, doc.resourceType || "document", problems);
    for (const [i, entry] of (doc.entry || []).entries()) {
      if (entry.resource) check(entry.resource, `entry[${i}] ${entry.resource.resourceType}`, problems);
    }
  }
  if (problems.length) {
    failed++;
    console.log(`FAIL ${file}: ${problems.join("; ")}`);
  } else {
    console.log(`ok ${file}`);
  }
}
process.exit(failed ? 1 : 0);
