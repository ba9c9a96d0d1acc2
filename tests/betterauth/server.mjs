// Real Better Auth (email + password, jwt plugin, memory adapter) on a loopback port, for the
// Python tests. Configuration from the environment:
//   PORT          the port to listen on (127.0.0.1), chosen by the test
//   BA_ALG        the jwt plugin's key algorithm: EdDSA (default), ES256, ES512, RS256, PS256
//   BA_EXPIRATION the jwt plugin's expirationTime (default "15m", as Better Auth's default)
//   BA_ISSUER, BA_AUDIENCE  override the jwt plugin's iss/aud (default: the base URL)
//   BA_HOST       the host name of the base URL (default 127.0.0.1; "localhost" for the browser)
//   STATIC_DIR    also serve this folder's files (a frontend page beside Better Auth, as Next.js)
// Besides Better Auth's own routes under /api/auth, a few test-only routes under /__harness:
//   GET  /__harness/stats   {"jwks_requests": n, "kids": [...]}  (counts GETs of /api/auth/jwks)
//   POST /__harness/rotate  expire the signing keys, as rotationInterval would; the next token is
//                           signed by a new key (new kid), the old key stays published
//   POST /__harness/jwks-delay  body {"ms": n}: answer the JWKS n ms late (a slow auth server)
//   POST /__harness/revoke  delete the keys: unpublished at once; the next token gets a new key
//   POST /__harness/sign    body {"payload": {...}}: Better Auth's own signJWT (same key), e.g. to
//                           make an already-expired token
//   POST /__harness/drop-kids  remove the id of every stored key, as a database adapter that does
//                           not return ids does (`generateId: false`): the JWKS then lists keys
//                           without `kid`, and tokens are signed without `kid`
import http from "node:http";
import crypto from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, normalize } from "node:path";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins/jwt";

const port = Number.parseInt(process.env.PORT ?? "", 10);
if (!Number.isInteger(port) || port <= 0) {
  console.error("PORT must be set to the port to listen on");
  process.exit(2);
}
const alg = process.env.BA_ALG || "EdDSA";
const baseURL = `http://${process.env.BA_HOST || "127.0.0.1"}:${port}`;
const keyPairConfig = alg === "EdDSA" ? { alg, crv: "Ed25519" } : { alg };

const db = { user: [], session: [], account: [], verification: [], jwks: [] };

const auth = betterAuth({
  baseURL,
  secret: crypto.randomBytes(32).toString("hex"),
  database: memoryAdapter(db),
  emailAndPassword: { enabled: true, autoSignIn: true },
  telemetry: { enabled: false },
  plugins: [
    jwt({
      jwks: { keyPairConfig },
      jwt: {
        expirationTime: process.env.BA_EXPIRATION || "15m",
        ...(process.env.BA_ISSUER ? { issuer: process.env.BA_ISSUER } : {}),
        ...(process.env.BA_AUDIENCE ? { audience: process.env.BA_AUDIENCE } : {}),
      },
    }),
  ],
});

const betterAuthHandler = toNodeHandler(auth);
let jwksRequests = 0;
let jwksDelayMs = 0;

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : {};
}

async function harness(req, res, path) {
  if (req.method === "GET" && path === "/__harness/stats") {
    return sendJson(res, 200, { jwks_requests: jwksRequests, kids: db.jwks.map((k) => k.id) });
  }
  if (req.method === "POST" && path === "/__harness/rotate") {
    // What rotationInterval does when it elapses: the key is no longer used to sign, but is
    // still published during the grace period, so tokens it signed keep verifying.
    const now = new Date(Date.now() - 1000);
    for (const key of db.jwks) key.expiresAt = now;
    return sendJson(res, 200, { expired: db.jwks.map((k) => k.id) });
  }
  if (req.method === "POST" && path === "/__harness/jwks-delay") {
    jwksDelayMs = Number((await readJson(req)).ms ?? 0);
    return sendJson(res, 200, { ms: jwksDelayMs });
  }
  if (req.method === "POST" && path === "/__harness/revoke") {
    // A compromised key is deleted outright: no longer published, no grace period.
    const revoked = db.jwks.splice(0, db.jwks.length).map((k) => k.id);
    return sendJson(res, 200, { revoked });
  }
  if (req.method === "POST" && path === "/__harness/drop-kids") {
    for (const key of db.jwks) delete key.id;
    return sendJson(res, 200, { keys: db.jwks.length });
  }
  if (req.method === "POST" && path === "/__harness/sign") {
    const body = await readJson(req);
    const result = await auth.api.signJWT({ body: { payload: body.payload ?? {} } });
    return sendJson(res, 200, result);
  }
  return sendJson(res, 404, { error: "not found" });
}

async function serveStatic(res, path) {
  const file = normalize(path === "/" ? "/index.html" : path);
  if (file.includes("..") || !file.endsWith(".html")) return sendJson(res, 404, { error: "not found" });
  try {
    const body = await readFile(join(process.env.STATIC_DIR, file));
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(body);
  } catch {
    sendJson(res, 404, { error: "not found" });
  }
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url ?? "/", baseURL).pathname;
  if (process.env.STATIC_DIR && req.method === "GET" && !path.startsWith("/api/") && !path.startsWith("/__harness/")) {
    serveStatic(res, path);
    return;
  }
  if (path.startsWith("/__harness/")) {
    harness(req, res, path).catch((err) => {
      console.error(err);
      sendJson(res, 500, { error: String(err) });
    });
    return;
  }
  if (path === "/api/auth/jwks" && req.method === "GET") {
    jwksRequests += 1;
    if (jwksDelayMs > 0) {
      setTimeout(() => betterAuthHandler(req, res), jwksDelayMs);
      return;
    }
  }
  betterAuthHandler(req, res);
});

server.listen(port, "127.0.0.1", () => {
  console.log(`better-auth harness listening on ${baseURL} alg=${alg}`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
