"use client";
// Better Auth in the browser, with the jwt plugin's client: authClient.token() reads
// GET /api/auth/token (the session cookie in, a JWT out).
import { createAuthClient } from "better-auth/react";
import { jwtClient } from "better-auth/client/plugins";

export const authClient = createAuthClient({ plugins: [jwtClient()] });

let cached: { token: string; expiresAt: number } | null = null;

function expiry(token: string): number {
  try {
    const part = token.split(".")[1] ?? "";
    const payload = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))) as { exp?: number };
    return (payload.exp ?? 0) * 1000;
  } catch {
    return 0;
  }
}

/** The token getter for the typed client: a cached JWT, fetched again a minute before `exp`. */
export async function getToken(): Promise<string> {
  if (cached && cached.expiresAt - Date.now() > 60_000) return cached.token;
  const { data, error } = await authClient.token();
  if (error || !data?.token) throw new Error(error?.message ?? "Not signed in");
  cached = { token: data.token, expiresAt: expiry(data.token) };
  return data.token;
}

/** Forget the cached token (on sign-in, sign-up and sign-out: it belongs to one user). */
export function forgetToken(): void {
  cached = null;
}
