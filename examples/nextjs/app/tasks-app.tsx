"use client";

import { type FormEvent, useCallback, useEffect, useMemo, useState } from "react";
import {
  ApiError,
  createTasksClient,
  type ListQuery,
  type Task,
  tasksFor,
} from "@tasks-api/client";
import { authClient, forgetToken, getToken } from "@/lib/auth-client";

type Status = NonNullable<ListQuery["status"]>;
type Sort = NonNullable<ListQuery["sort"]>;
type Order = NonNullable<ListQuery["order"]>;

function message(error: unknown): string {
  if (error instanceof ApiError) return `${error.status}: ${error.detail}`;
  return error instanceof Error ? error.message : String(error);
}

export function TasksApp({ apiUrl }: { apiUrl: string }) {
  const { data: session, isPending } = authClient.useSession();
  if (isPending) return <p id="state">loading</p>;
  if (!session) return <SignIn />;
  return <TaskList apiUrl={apiUrl} userId={session.user.id} email={session.user.email} />;
}

function SignIn() {
  const [mode, setMode] = useState<"sign-in" | "sign-up">("sign-up");
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError("");
    forgetToken();
    const result =
      mode === "sign-up"
        ? await authClient.signUp.email({ name: name || email, email, password })
        : await authClient.signIn.email({ email, password });
    if (result.error) setError(result.error.message ?? result.error.statusText);
    setBusy(false);
  }

  return (
    <form id="auth-form" className="card" onSubmit={submit}>
      <h2>{mode === "sign-up" ? "Create an account" : "Sign in"}</h2>
      {mode === "sign-up" && (
        <label>
          Name
          <input id="name" value={name} onChange={(e) => setName(e.target.value)} />
        </label>
      )}
      <label>
        Email
        <input
          id="email"
          type="email"
          required
          value={email}
          onChange={(e) => setEmail(e.target.value)}
        />
      </label>
      <label>
        Password
        <input
          id="password"
          type="password"
          required
          minLength={8}
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
      </label>
      <p id="error" role="alert">
        {error}
      </p>
      <div className="row">
        <button id="submit" type="submit" disabled={busy}>
          {mode === "sign-up" ? "Sign up" : "Sign in"}
        </button>
        <button
          id="switch-mode"
          type="button"
          className="link"
          onClick={() => setMode(mode === "sign-up" ? "sign-in" : "sign-up")}
        >
          {mode === "sign-up" ? "I have an account" : "Create an account"}
        </button>
      </div>
    </form>
  );
}

function TaskList({ apiUrl, userId, email }: { apiUrl: string; userId: string; email: string }) {
  // `?user=<id>` opens another user's list: the API refuses it (403), and the page says so.
  const [listUser, setListUser] = useState<string | null>(null);
  useEffect(() => {
    setListUser(new URLSearchParams(window.location.search).get("user") ?? userId);
  }, [userId]);

  const api = useMemo(
    () => tasksFor(createTasksClient({ baseUrl: apiUrl, getToken }), listUser ?? userId),
    [apiUrl, listUser, userId],
  );
  const [tasks, setTasks] = useState<Task[]>([]);
  const [status, setStatus] = useState<Status>("all");
  const [sort, setSort] = useState<Sort>("created");
  const [order, setOrder] = useState<Order>("asc");
  const [state, setState] = useState<"loading" | "ready" | "error">("loading");
  const [error, setError] = useState("");
  const [title, setTitle] = useState("");
  const [description, setDescription] = useState("");
  const [editing, setEditing] = useState<{ id: number; title: string; description: string } | null>(
    null,
  );

  const refresh = useCallback(async () => {
    setTasks(await api.list({ status, sort, order }));
  }, [api, status, sort, order]);

  // Every action: mark busy, run it, reload the list (filter and sort apply), show any error.
  const run = useCallback(
    async (action: () => Promise<unknown>) => {
      setState("loading");
      try {
        await action();
        await refresh();
        setError("");
        setState("ready");
      } catch (err) {
        setError(message(err));
        setState("error");
      }
    },
    [refresh],
  );

  useEffect(() => {
    if (listUser !== null) void run(async () => undefined);
  }, [listUser, run]);

  async function add(event: FormEvent) {
    event.preventDefault();
    await run(async () => {
      await api.create({ title, description: description || null });
      setTitle("");
      setDescription("");
    });
  }

  async function save(event: FormEvent) {
    event.preventDefault();
    if (!editing) return;
    const { id, title: newTitle, description: newDescription } = editing;
    await run(async () => {
      await api.update(id, { title: newTitle, description: newDescription || null });
      setEditing(null);
    });
  }

  async function signOut() {
    await authClient.signOut();
    forgetToken();
  }

  return (
    <section className="card">
      <header className="row between">
        <span id="who">{email}</span>
        <button id="sign-out" type="button" className="link" onClick={signOut}>
          Sign out
        </button>
      </header>

      <form id="add-form" className="row" onSubmit={add}>
        <input
          id="title"
          placeholder="What needs doing?"
          required
          maxLength={200}
          value={title}
          onChange={(e) => setTitle(e.target.value)}
        />
        <input
          id="description"
          placeholder="Details (optional)"
          maxLength={1000}
          value={description}
          onChange={(e) => setDescription(e.target.value)}
        />
        <button id="add" type="submit">
          Add
        </button>
      </form>

      <div className="row controls">
        <label>
          Show
          <select id="filter" value={status} onChange={(e) => setStatus(e.target.value as Status)}>
            <option value="all">All</option>
            <option value="pending">Pending</option>
            <option value="completed">Completed</option>
          </select>
        </label>
        <label>
          Sort by
          <select id="sort" value={sort} onChange={(e) => setSort(e.target.value as Sort)}>
            <option value="created">Created</option>
            <option value="title">Title</option>
          </select>
        </label>
        <label>
          Order
          <select id="order" value={order} onChange={(e) => setOrder(e.target.value as Order)}>
            <option value="asc">Ascending</option>
            <option value="desc">Descending</option>
          </select>
        </label>
      </div>

      <p id="error" role="alert">
        {error}
      </p>

      <ul id="tasks">
        {tasks.map((task) =>
          editing?.id === task.id ? (
            <li key={task.id} data-id={task.id}>
              <form className="row" onSubmit={save}>
                <input
                  className="edit-title"
                  required
                  maxLength={200}
                  value={editing.title}
                  onChange={(e) => setEditing({ ...editing, title: e.target.value })}
                />
                <input
                  className="edit-description"
                  maxLength={1000}
                  value={editing.description}
                  onChange={(e) => setEditing({ ...editing, description: e.target.value })}
                />
                <button className="save" type="submit">
                  Save
                </button>
                <button className="cancel link" type="button" onClick={() => setEditing(null)}>
                  Cancel
                </button>
              </form>
            </li>
          ) : (
            <li key={task.id} data-id={task.id} className={task.completed ? "done" : undefined}>
              <input
                className="toggle"
                type="checkbox"
                aria-label="Done"
                checked={task.completed}
                onChange={() => run(() => api.complete(task.id))}
              />
              <span className="text">
                <span className="title">{task.title}</span>
                {task.description && <span className="description">{task.description}</span>}
              </span>
              <button
                className="edit link"
                type="button"
                onClick={() =>
                  setEditing({
                    id: task.id,
                    title: task.title,
                    description: task.description ?? "",
                  })
                }
              >
                Edit
              </button>
              <button
                className="delete link"
                type="button"
                onClick={() => run(() => api.remove(task.id))}
              >
                Delete
              </button>
            </li>
          ),
        )}
      </ul>
      <p className="muted">
        <span id="count">{tasks.length}</span> shown · <span id="state">{state}</span>
      </p>
    </section>
  );
}
