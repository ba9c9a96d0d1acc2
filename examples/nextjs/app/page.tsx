import { TasksApp } from "./tasks-app";

// Read at request time, not baked into the build: one build serves any API address.
export const dynamic = "force-dynamic";

export default function Home() {
  const apiUrl = process.env.TASKS_API_URL ?? "http://127.0.0.1:8000";
  return (
    <main>
      <h1>Tasks</h1>
      <TasksApp apiUrl={apiUrl} />
    </main>
  );
}
