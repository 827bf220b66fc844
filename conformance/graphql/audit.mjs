// Runs graphql-http's GraphQL-over-HTTP server audits (`auditServer`) against a URL and
// prints one JSON line: [{ id, name, status: "ok" | "warn" | "error", reason }].
//
//   node audit.mjs http://127.0.0.1:8080/graphql
import { auditServer } from 'graphql-http';

const results = await auditServer({ url: process.argv[2] });
console.log(JSON.stringify(results.map((r) => ({
  id: r.id, name: r.name, status: r.status, reason: r.reason ?? null,
}))));
