// Every Better Auth endpoint under /api/auth: sign-up/email, sign-in/email, sign-out,
// get-session, and the jwt plugin's /token and /jwks.
import { toNextJsHandler } from "better-auth/next-js";
import { auth } from "@/lib/auth";

export const { GET, POST } = toNextJsHandler(auth);
