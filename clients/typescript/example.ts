// A small example, type-checked in CI (`npm run typecheck`): a token getter backed by Better
// Auth's /api/auth/token, then the six operations. Run against a live stack with
//   node --experimental-strip-types example.ts   (Node 22+), or compile it with tsc.
import { ApiError, createTasksClient, tasksFor, type Task } from "./src/index";

const authUrl = "http://localhost:3000"; // the Next.js app that hosts Better Auth
const apiUrl = "http://127.0.0.1:8000"; // tasks-api serve

async function getToken(): Promise<string> {
  const response = await fetch(`${authUrl}/api/auth/token`, { credentials: "include" });
  if (!response.ok) throw new Error(`not signed in (${response.status})`);
  const { token } = (await response.json()) as { token: string };
  return token;
}

export async function demo(userId: string): Promise<Task[]> {
  const client = createTasksClient({ baseUrl: apiUrl, getToken });
  const tasks = tasksFor(client, userId);
  const milk = await tasks.create({ title: "Buy milk", description: "oat" });
  await tasks.update(milk.id, { title: "Buy oat milk", description: null });
  await tasks.complete(milk.id); // toggle
  await tasks.complete(milk.id, true); // set, safe to retry
  await tasks.get(milk.id);
  try {
    await tasks.remove(milk.id);
    await tasks.remove(milk.id); // a second DELETE is 404
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
  }
  // The raw openapi-fetch call gives the response headers too, e.g. X-Total-Count.
  const { data, response } = await client.GET("/api/{user_id}/tasks", {
    params: { path: { user_id: userId }, query: { status: "pending", sort: "title", limit: 50 } },
  });
  console.log("total", response.headers.get("X-Total-Count"));
  return data ?? [];
}
