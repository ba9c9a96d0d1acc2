-- Conditional requests and safe retries (contract: "Conditional requests and safe retries").
--
-- users.tasks_version: bumped by the same statement that really changes one of the user's
-- tasks, so that the list's ETag is one primary-key lookup away (a 304 poll reads nothing
-- else). tasks.version: bumped when a value of the task really changes; a task's ETag, and
-- what If-Match is compared with inside the writing statement.
-- Adding a column with a constant default rewrites nothing (PostgreSQL 11+).
ALTER TABLE users ADD COLUMN tasks_version bigint NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- Idempotency-Key on POST (IETF httpapi idempotency-key draft): one row per user and key,
-- written by the statement that creates the task, holding the request's fingerprint and the
-- response, so a retry is answered from here for 24 hours, by any instance, also after a
-- restart. Expired rows are deleted by the inserting statement (oldest first, a few at a
-- time), hence the index on created_at.
CREATE TABLE idempotency_keys (
    user_id     text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    task_id     bigint      NOT NULL,
    status_code smallint    NOT NULL,
    response    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 1 AND 255)
);
CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at);
