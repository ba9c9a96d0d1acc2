// What the README's Next.js route does (way 2): an HS256 token signed with `jose` and the shared
// BETTER_AUTH_SECRET. Usage: BETTER_AUTH_SECRET=… node sign-hs256.mjs USER_ID [NAME] [EMAIL]
import { SignJWT } from "jose";

const [sub, name, email] = process.argv.slice(2);
const secret = new TextEncoder().encode(process.env.BETTER_AUTH_SECRET);
const token = await new SignJWT({ name, email })
  .setProtectedHeader({ alg: "HS256" })
  .setSubject(sub)
  .setIssuedAt()
  .setExpirationTime("15m")
  .sign(secret);
console.log(token);
