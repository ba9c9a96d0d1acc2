/**
 * A tiny typed client for the Tasks API.
 *
 * Every path, parameter, body and response type comes from `schema.d.ts`, which
 * openapi-typescript generates from the service's own OpenAPI document
 * (`scripts/generate.sh`); calls go through openapi-fetch. The only addition is the bearer
 * token: `getToken` is awaited before every request, so a short-lived Better Auth JWT
 * (15 minutes by default) can be fetched or refreshed there.
 *
 *   const api = createTasksClient({ baseUrl: "http://127.0.0.1:8000", getToken });
 *   const { data, error, response } = await api.GET("/api/{user_id}/tasks", {
 *     params: { path: { user_id }, query: { status: "pending", sort: "title" } },
 *   });
 */
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, operations, paths } from "./schema";

export type { components, operations, paths };

/** A task as the API returns it (`TaskPublic`). */
export type Task = components["schemas"]["TaskPublic"];
/** Body of `createTask` (POST /api/{user_id}/tasks). */
export type TaskCreate = components["schemas"]["TaskCreate"];
/** Body of `updateTask` (PUT /api/{user_id}/tasks/{task_id}). */
export type TaskUpdate = components["schemas"]["TaskUpdate"];
/** The error envelope of every non-2xx answer: `{status_code, detail}`. */
export type ApiErrorBody = components["schemas"]["ErrorResponse"];
/** Query of `listTasks`: status filter, sort, order, paging. */
export type ListQuery = NonNullable<operations["listTasks"]["parameters"]["query"]>;

/** Returns the current bearer token (a JWT), e.g. from Better Auth's `/api/auth/token`. */
export type TokenGetter = () => Promise<string>;

export type TasksClient = Client<paths>;

export interface TasksClientOptions {
  /** The API origin, e.g. "http://127.0.0.1:8000" (no trailing slash). */
  baseUrl: string;
  /** Awaited before every request; its result is sent as `Authorization: Bearer <token>`. */
  getToken: TokenGetter;
  /** Custom fetch (defaults to globalThis.fetch). */
  fetch?: (input: Request) => Promise<Response>;
}

/** The openapi-fetch client for the Tasks API, with the bearer token added to every request. */
export function createTasksClient(options: TasksClientOptions): TasksClient {
  const client = createClient<paths>({ baseUrl: options.baseUrl, fetch: options.fetch });
  const auth: Middleware = {
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${await options.getToken()}`);
      return request;
    },
  };
  client.use(auth);
  return client;
}

/** A non-2xx answer: its HTTP status and the API's `detail` string. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`${status}: ${detail}`);
    this.name = "ApiError";
  }
}

function fail(response: Response, error: unknown): never {
  const detail =
    error && typeof error === "object" && "detail" in error && typeof error.detail === "string"
      ? error.detail
      : response.statusText || "Request failed";
  throw new ApiError(response.status, detail);
}

/**
 * The six operations for one user, each resolving to its data or throwing `ApiError`.
 * `userId` must be the token's `sub` (else every call is refused with 403).
 */
export function tasksFor(client: TasksClient, userId: string) {
  const path = { user_id: userId };
  return {
    /** listTasks: GET /api/{user_id}/tasks */
    async list(query: ListQuery = {}): Promise<Task[]> {
      const { data, error, response } = await client.GET("/api/{user_id}/tasks", {
        params: { path, query },
      });
      return data ?? fail(response, error);
    },
    /** createTask: POST /api/{user_id}/tasks (201, `Location` header) */
    async create(body: TaskCreate): Promise<Task> {
      const { data, error, response } = await client.POST("/api/{user_id}/tasks", {
        params: { path },
        body,
      });
      return data ?? fail(response, error);
    },
    /** getTask: GET /api/{user_id}/tasks/{task_id} */
    async get(taskId: number): Promise<Task> {
      const { data, error, response } = await client.GET("/api/{user_id}/tasks/{task_id}", {
        params: { path: { ...path, task_id: String(taskId) } },
      });
      return data ?? fail(response, error);
    },
    /** updateTask: PUT /api/{user_id}/tasks/{task_id}; omitted fields are unchanged */
    async update(taskId: number, body: TaskUpdate): Promise<Task> {
      const { data, error, response } = await client.PUT("/api/{user_id}/tasks/{task_id}", {
        params: { path: { ...path, task_id: String(taskId) } },
        body,
      });
      return data ?? fail(response, error);
    },
    /** completeTask: PATCH …/complete; no argument toggles, a boolean sets (idempotent) */
    async complete(taskId: number, completed?: boolean): Promise<Task> {
      const { data, error, response } = await client.PATCH(
        "/api/{user_id}/tasks/{task_id}/complete",
        {
          params: { path: { ...path, task_id: String(taskId) } },
          ...(completed === undefined ? {} : { body: { completed } }),
        },
      );
      return data ?? fail(response, error);
    },
    /** deleteTask: DELETE /api/{user_id}/tasks/{task_id} (204) */
    async remove(taskId: number): Promise<void> {
      const { error, response } = await client.DELETE("/api/{user_id}/tasks/{task_id}", {
        params: { path: { ...path, task_id: String(taskId) } },
      });
      if (!response.ok) fail(response, error);
    },
  };
}

export type TasksApi = ReturnType<typeof tasksFor>;
