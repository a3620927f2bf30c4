// Usage: node audit.mjs <url> [<bearer token>]
// Prints one JSON object: {"ok": n, "warn": n, "error": n, "results": [...]}; 'error' results are MUST
// failures of the GraphQL-over-HTTP spec, 'warn' results are SHOULDs.
import { auditServer } from 'graphql-http';

const [url, token] = process.argv.slice(2);
if (!url) {
  console.error('usage: node audit.mjs <url> [<bearer token>]');
  process.exit(2);
}

const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  if (token) headers.set('Authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

const results = await auditServer({ url, fetchFn });
const summary = { ok: 0, warn: 0, error: 0, results: [] };
for (const result of results) {
  summary[result.status] += 1;
  summary.results.push({
    id: result.id,
    name: result.name,
    status: result.status,
    reason: result.status === 'ok' ? null : result.reason,
  });
}
console.log(JSON.stringify(summary));
