// Better Auth on the server: email + password, and the jwt plugin, whose tokens (EdDSA, 15
// minutes, kid in the header) the Tasks API verifies through {BETTER_AUTH_URL}/api/auth/jwks.
// The memory adapter keeps users, sessions and the signing keys in this process: nothing to
// provision, and everything is gone on restart (use a real adapter in production).
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { jwt } from "better-auth/plugins/jwt";
import { randomBytes } from "node:crypto";

const baseURL = process.env.BETTER_AUTH_URL ?? "http://localhost:3000";

function secret(): string {
  const configured = process.env.BETTER_AUTH_SECRET;
  if (configured) return configured;
  // Sessions are in memory anyway, so a per-process secret loses nothing. (`next build` also
  // evaluates this module; it serves nobody, so no warning then.)
  if (process.env.NEXT_PHASE !== "phase-production-build") {
    console.warn("BETTER_AUTH_SECRET is not set: using a random one (development only)");
  }
  return randomBytes(32).toString("hex");
}

function createAuth() {
  return betterAuth({
    baseURL,
    secret: secret(),
    database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
    emailAndPassword: { enabled: true, autoSignIn: true },
    telemetry: { enabled: false },
    plugins: [jwt()],
  });
}

// One instance per process, even if Next.js evaluates this module in more than one bundle:
// the memory adapter's data must be shared by every route.
const globalForAuth = globalThis as typeof globalThis & { __tasksAuth?: ReturnType<typeof createAuth> };
export const auth = (globalForAuth.__tasksAuth ??= createAuth());
