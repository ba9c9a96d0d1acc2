-- Named statements of the TaskRepository. Every statement is scoped by owner in its WHERE.
--
-- Versions (contract, "Conditional requests and safe retries"): a statement that really
-- changes a task bumps tasks.version (the task's ETag) and users.tasks_version (the list's
-- ETag) in the same statement, so a tag never lags behind the data. %(if_match)s is NULL
-- without If-Match (last write wins, as before), else the task versions the client's tags
-- name; the write then happens only on one of them, decided inside the statement.

-- name: create_task
-- Creates the user's reference row on first write (else bumps its tasks_version), then the
-- task, in one statement.
WITH owner AS (
    INSERT INTO users AS u (id, name, email, tasks_version)
    VALUES (%(user_id)s, %(name)s, %(email)s, 1)
    ON CONFLICT (id) DO UPDATE SET tasks_version = u.tasks_version + 1
)
INSERT INTO tasks (user_id, title, description)
VALUES (%(user_id)s, %(title)s, %(description)s)
RETURNING id, user_id, title, description, completed, created_at, updated_at, version;

-- name: create_task_idempotent
-- POST with an Idempotency-Key: the task and the key's row (fingerprint and response) are
-- written together or not at all, so a key never names a task that does not exist, and a
-- crash leaves nothing half done. Returns one row: `free` (false: a request with this key is
-- running: 409), `created` (this statement made the task), and the key's stored
-- fingerprint and response.
WITH attempt AS (
    -- Non-blocking, held until this statement commits, shared by every instance. The key
    -- has no space (visible ASCII only), so the first space separates it from the user.
    SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s || ' ' || %(user_id)s, 0)) AS free
),
swept AS (
    -- Expired keys belong to no contract any more, whoever's they were: a few per insert,
    -- oldest first, keep the table at about one day of keys without a background job.
    DELETE FROM idempotency_keys
    WHERE (user_id, key) IN (
        SELECT user_id, key
        FROM idempotency_keys
        WHERE created_at < now() - interval '24 hours'
          AND NOT (user_id = %(user_id)s AND key = %(key)s)
          AND (SELECT free FROM attempt)
        ORDER BY created_at
        LIMIT 16
        FOR UPDATE SKIP LOCKED
    )
),
new_task AS (
    SELECT nextval(pg_get_serial_sequence('tasks', 'id')) AS id, now() AS at
    WHERE (SELECT free FROM attempt)
),
claimed AS (
    -- A new key is stored with the response this statement produces. A known key keeps its
    -- row (an expired one is taken over), and RETURNING hands it back: ON CONFLICT reads the
    -- latest committed row, also one committed after this statement's snapshot was taken.
    INSERT INTO idempotency_keys AS k
        (user_id, key, fingerprint, task_id, status_code, response, created_at)
    SELECT %(user_id)s, %(key)s, %(fingerprint)s, n.id, 201,
           jsonb_build_object(
               'id', n.id, 'user_id', %(user_id)s::text, 'title', %(title)s::text,
               'description', %(description)s::text, 'completed', false,
               'created_at', n.at, 'updated_at', n.at
           ),
           n.at
    FROM new_task AS n
    ON CONFLICT (user_id, key) DO UPDATE SET
        fingerprint = CASE WHEN k.created_at < now() - interval '24 hours'
                           THEN excluded.fingerprint ELSE k.fingerprint END,
        task_id = CASE WHEN k.created_at < now() - interval '24 hours'
                       THEN excluded.task_id ELSE k.task_id END,
        status_code = CASE WHEN k.created_at < now() - interval '24 hours'
                           THEN excluded.status_code ELSE k.status_code END,
        response = CASE WHEN k.created_at < now() - interval '24 hours'
                        THEN excluded.response ELSE k.response END,
        created_at = CASE WHEN k.created_at < now() - interval '24 hours'
                          THEN excluded.created_at ELSE k.created_at END
    RETURNING k.task_id, k.fingerprint, k.status_code, k.response
),
owner AS (
    INSERT INTO users AS u (id, name, email, tasks_version)
    SELECT %(user_id)s, %(name)s, %(email)s, 1
    FROM claimed AS c JOIN new_task AS n ON c.task_id = n.id
    ON CONFLICT (id) DO UPDATE SET tasks_version = u.tasks_version + 1
),
created AS (
    INSERT INTO tasks (id, user_id, title, description, created_at, updated_at)
    SELECT n.id, %(user_id)s, %(title)s, %(description)s, n.at, n.at
    FROM claimed AS c JOIN new_task AS n ON c.task_id = n.id
)
SELECT a.free, coalesce(c.task_id = n.id, false) AS created,
       c.fingerprint, c.status_code, c.response
FROM attempt AS a
LEFT JOIN claimed AS c ON true
LEFT JOIN new_task AS n ON true;

-- name: get_task
-- One task of one user.
SELECT id, user_id, title, description, completed, created_at, updated_at, version
FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s;

-- name: list_tasks
-- The user's tasks and the list's version, in one round trip; {status} and {order} come
-- from a fixed whitelist in the repository. When the version is one the client already has
-- (%(known)s, from If-None-Match) the tasks are not read at all (a one-time filter): the
-- unchanged poll costs one primary-key lookup of users.
WITH head AS (
    SELECT coalesce(u.tasks_version, 0) AS list_version, u.created_at AS list_since
    FROM (VALUES (1)) AS one
    LEFT JOIN users AS u ON u.id = %(user_id)s
)
SELECT head.list_version, head.list_since, page.id, page.user_id, page.title,
       page.description, page.completed, page.created_at, page.updated_at, page.version
FROM head
LEFT JOIN LATERAL (
    -- title_key only for {page_order}: the outer SELECT does not return it.
    SELECT id, user_id, title, description, completed, created_at, updated_at, version, title_key
    FROM tasks
    WHERE user_id = %(user_id)s {status}
      AND (SELECT list_version FROM head) <> ALL (%(known)s::bigint[])
    ORDER BY {order}
) AS page ON true
ORDER BY {page_order};

-- name: list_tasks_page
-- One page of the user's tasks, the total of the filter and the list's version, in one
-- round trip; neither is read when the version is one the client has (see list_tasks).
WITH head AS (
    SELECT coalesce(u.tasks_version, 0) AS list_version, u.created_at AS list_since
    FROM (VALUES (1)) AS one
    LEFT JOIN users AS u ON u.id = %(user_id)s
)
SELECT head.list_version, head.list_since, total.n AS total, page.id, page.user_id,
       page.title, page.description, page.completed, page.created_at, page.updated_at,
       page.version
FROM head
CROSS JOIN LATERAL (
    SELECT count(*) AS n
    FROM tasks
    WHERE user_id = %(user_id)s {status}
      AND (SELECT list_version FROM head) <> ALL (%(known)s::bigint[])
) AS total
LEFT JOIN LATERAL (
    -- title_key only for {page_order}: the outer SELECT does not return it.
    SELECT id, user_id, title, description, completed, created_at, updated_at, version, title_key
    FROM tasks
    WHERE user_id = %(user_id)s {status}
      AND (SELECT list_version FROM head) <> ALL (%(known)s::bigint[])
    ORDER BY {order}
    LIMIT %(limit)s OFFSET %(offset)s
) AS page ON true
ORDER BY {page_order};

-- name: update_task
-- Applies the given fields; writes (and moves updated_at and the versions) only when a
-- value really changes and If-Match (if any) names the current version.
WITH changed AS (
    UPDATE tasks
    SET title = CASE WHEN %(set_title)s THEN %(title)s::text ELSE title END,
        description = CASE WHEN %(set_description)s THEN %(description)s::text ELSE description END,
        updated_at = now(),
        version = version + 1
    WHERE id = %(task_id)s AND user_id = %(user_id)s
      AND (%(if_match)s::bigint[] IS NULL OR version = ANY (%(if_match)s::bigint[]))
      AND ((%(set_title)s AND title IS DISTINCT FROM %(title)s::text)
           OR (%(set_description)s AND description IS DISTINCT FROM %(description)s::text))
    RETURNING id, user_id, title, description, completed, created_at, updated_at, version
),
bumped AS (
    UPDATE users SET tasks_version = tasks_version + 1
    WHERE id = %(user_id)s AND EXISTS (SELECT 1 FROM changed)
),
unchanged AS (
    -- Nothing written: same data, If-Match not met, or no such task. Locked, so the row is
    -- the latest committed one: the loser of a race with the same If-Match sees the winner's
    -- version (412), not the version its snapshot started with.
    SELECT id, user_id, title, description, completed, created_at, updated_at, version
    FROM tasks
    WHERE id = %(task_id)s AND user_id = %(user_id)s AND NOT EXISTS (SELECT 1 FROM changed)
    FOR NO KEY UPDATE
)
SELECT true AS matched, id, user_id, title, description, completed, created_at, updated_at,
       version
FROM changed
UNION ALL
SELECT (%(if_match)s::bigint[] IS NULL OR version = ANY (%(if_match)s::bigint[])) AS matched,
       id, user_id, title, description, completed, created_at, updated_at, version
FROM unchanged;

-- name: toggle_task
-- Flips completed atomically in the row itself, so concurrent toggles are never lost; with
-- If-Match only on a listed version. A second row tells a failed If-Match (412) from a
-- missing task (404).
WITH changed AS (
    UPDATE tasks
    SET completed = NOT completed, updated_at = now(), version = version + 1
    WHERE id = %(task_id)s AND user_id = %(user_id)s
      AND (%(if_match)s::bigint[] IS NULL OR version = ANY (%(if_match)s::bigint[]))
    RETURNING id, user_id, title, description, completed, created_at, updated_at, version
),
bumped AS (
    UPDATE users SET tasks_version = tasks_version + 1
    WHERE id = %(user_id)s AND EXISTS (SELECT 1 FROM changed)
)
SELECT true AS matched, id, user_id, title, description, completed, created_at, updated_at,
       version
FROM changed
UNION ALL
SELECT false AS matched, id, user_id, title, description, completed, created_at, updated_at,
       version
FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s AND %(if_match)s::bigint[] IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM changed);

-- name: set_task_completed
-- Sets completed; idempotent: updated_at and the versions move only when the state changes.
WITH changed AS (
    UPDATE tasks
    SET completed = %(completed)s, updated_at = now(), version = version + 1
    WHERE id = %(task_id)s AND user_id = %(user_id)s AND completed IS DISTINCT FROM %(completed)s
      AND (%(if_match)s::bigint[] IS NULL OR version = ANY (%(if_match)s::bigint[]))
    RETURNING id, user_id, title, description, completed, created_at, updated_at, version
),
bumped AS (
    UPDATE users SET tasks_version = tasks_version + 1
    WHERE id = %(user_id)s AND EXISTS (SELECT 1 FROM changed)
),
unchanged AS (
    -- Locked for the same reason as in update_task.
    SELECT id, user_id, title, description, completed, created_at, updated_at, version
    FROM tasks
    WHERE id = %(task_id)s AND user_id = %(user_id)s AND NOT EXISTS (SELECT 1 FROM changed)
    FOR NO KEY UPDATE
)
SELECT true AS matched, id, user_id, title, description, completed, created_at, updated_at,
       version
FROM changed
UNION ALL
SELECT (%(if_match)s::bigint[] IS NULL OR version = ANY (%(if_match)s::bigint[])) AS matched,
       id, user_id, title, description, completed, created_at, updated_at, version
FROM unchanged;

-- name: delete_task
-- Removes one task of one user (with If-Match: only at a listed version).
WITH gone AS (
    DELETE FROM tasks
    WHERE id = %(task_id)s AND user_id = %(user_id)s
      AND (%(if_match)s::bigint[] IS NULL OR version = ANY (%(if_match)s::bigint[]))
    RETURNING id
),
bumped AS (
    UPDATE users SET tasks_version = tasks_version + 1
    WHERE id = %(user_id)s AND EXISTS (SELECT 1 FROM gone)
)
SELECT true AS matched FROM gone
UNION ALL
SELECT false AS matched
FROM tasks
WHERE id = %(task_id)s AND user_id = %(user_id)s AND %(if_match)s::bigint[] IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM gone);
