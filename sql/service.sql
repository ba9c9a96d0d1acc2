-- Named statements of the service itself (not of a user's tasks).

-- name: schema_version
-- Readiness: the database answers and reports the applied schema version.
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;
