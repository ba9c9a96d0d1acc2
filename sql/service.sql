-- Named statements of the service itself (not of a user's tasks).

-- name: schema_version
-- Readiness: the database answers and reports the applied schema version.
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;

-- name: connection_slots
-- Start-up on a direct connection: how many connections the server allows a client that is
-- not a superuser (PostgreSQL 16+ also reserves reserved_connections).
SELECT current_setting('max_connections')::int
       - current_setting('superuser_reserved_connections')::int
       - coalesce(current_setting('reserved_connections', true)::int, 0) AS slots;
