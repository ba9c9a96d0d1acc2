-- Named statements of the TaskRepository. Every statement is scoped by owner in its WHERE.

-- name: create_task
-- Creates the user's reference row on first write, then the task, in one statement.
WITH ensure_user AS (
    INSERT INTO users (id, name, email)
    VALUES (%(user_id)s, %(name)s, %(email)s)
    ON CONFLICT (id) DO NOTHING
)
INSERT INTO tasks (user_id, title, description)
VALUES (%(user_id)s, %(title)s, %(description)s)
RETURNING id, user_id, title, description, completed, created_at, updated_at;

-- name: get_task
-- One task of one user.
SELECT id, user_id, title, description, completed, created_at, updated_at
FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s;

-- name: list_tasks
-- The user's tasks; {status} and {order} come from a fixed whitelist in the repository.
SELECT id, user_id, title, description, completed, created_at, updated_at
FROM tasks
WHERE user_id = %(user_id)s {status}
ORDER BY {order};

-- name: list_tasks_page
-- One page of the user's tasks and the total of the filter, in one round trip.
SELECT total.n AS total, page.id, page.user_id, page.title, page.description, page.completed,
       page.created_at, page.updated_at
FROM (SELECT count(*) AS n FROM tasks WHERE user_id = %(user_id)s {status}) AS total
LEFT JOIN LATERAL (
    -- title_key only for {page_order}: the outer SELECT does not return it.
    SELECT id, user_id, title, description, completed, created_at, updated_at, title_key
    FROM tasks
    WHERE user_id = %(user_id)s {status}
    ORDER BY {order}
    LIMIT %(limit)s OFFSET %(offset)s
) AS page ON true
ORDER BY {page_order};

-- name: update_task
-- Applies the given fields; writes (and moves updated_at) only when a value really changes.
WITH changed AS (
    UPDATE tasks
    SET title = CASE WHEN %(set_title)s THEN %(title)s::text ELSE title END,
        description = CASE WHEN %(set_description)s THEN %(description)s::text ELSE description END,
        updated_at = now()
    WHERE id = %(task_id)s AND user_id = %(user_id)s
      AND ((%(set_title)s AND title IS DISTINCT FROM %(title)s::text)
           OR (%(set_description)s AND description IS DISTINCT FROM %(description)s::text))
    RETURNING id, user_id, title, description, completed, created_at, updated_at
)
SELECT id, user_id, title, description, completed, created_at, updated_at FROM changed
UNION ALL
SELECT id, user_id, title, description, completed, created_at, updated_at
FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s AND NOT EXISTS (SELECT 1 FROM changed);

-- name: toggle_task
-- Flips completed atomically in the row itself, so concurrent toggles are never lost.
UPDATE tasks
SET completed = NOT completed, updated_at = now()
WHERE id = %(task_id)s AND user_id = %(user_id)s
RETURNING id, user_id, title, description, completed, created_at, updated_at;

-- name: set_task_completed
-- Sets completed; idempotent: updated_at moves only when the state changes.
WITH changed AS (
    UPDATE tasks
    SET completed = %(completed)s, updated_at = now()
    WHERE id = %(task_id)s AND user_id = %(user_id)s AND completed IS DISTINCT FROM %(completed)s
    RETURNING id, user_id, title, description, completed, created_at, updated_at
)
SELECT id, user_id, title, description, completed, created_at, updated_at FROM changed
UNION ALL
SELECT id, user_id, title, description, completed, created_at, updated_at
FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s AND NOT EXISTS (SELECT 1 FROM changed);

-- name: delete_task
-- Removes one task of one user.
DELETE FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s
RETURNING id;

-- name: ping
-- Readiness: the database answers and reports the applied schema version.
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;
