-- identity-svc: the role grants this service made for the service user, so they can be
-- listed and revoked (REVOKE_ROLE_AFTER_RUN). Tokens and passwords are never stored.
-- Times are RFC 3339 UTC text so one query path serves SQLite and PostgreSQL.

CREATE TABLE role_grants (
    project_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    role_id     TEXT NOT NULL,
    role_name   TEXT NOT NULL,
    run_id      TEXT,                                  -- the run that caused the grant, if any
    granted_at  TEXT NOT NULL,
    revoked_at  TEXT,
    PRIMARY KEY (project_id, user_id, role_id, granted_at)
);
CREATE INDEX role_grants_open ON role_grants (project_id) WHERE revoked_at IS NULL;
CREATE INDEX role_grants_run ON role_grants (run_id);
