-- policy-svc: rule sets (versioned), the policy catalog, policy sets, assignments, exclusions.
-- Times are RFC 3339 UTC text so one query path serves SQLite and PostgreSQL (sqlx Any driver).

CREATE TABLE rule_sets (
    version      BIGINT PRIMARY KEY,        -- 1, 2, ...; assigned by the service
    document     TEXT    NOT NULL,           -- the rules document exactly as submitted (JSON)
    checksum     TEXT    NOT NULL,           -- 'sha256:' + hex of the document bytes
    source       TEXT    NOT NULL CHECK (source IN ('api', 'file')),
    created_by   TEXT    NOT NULL,           -- the actor, or 'file:<path>'
    created_at   TEXT    NOT NULL,
    comment      TEXT    NOT NULL DEFAULT '',
    rule_count   BIGINT NOT NULL,
    policy_count BIGINT NOT NULL,
    is_active    BOOLEAN NOT NULL DEFAULT FALSE
);
-- Only valid documents are stored: a rejected document never reaches this table.
CREATE UNIQUE INDEX rule_sets_one_active ON rule_sets (is_active) WHERE is_active;

CREATE TABLE policies (
    name                      TEXT PRIMARY KEY,
    description               TEXT,
    schedule_cron             TEXT,          -- 5-field cron, with schedule_timezone
    schedule_timezone         TEXT,          -- IANA zone, e.g. Europe/Berlin
    schedule_interval_seconds BIGINT,        -- alternative to cron
    schedule_anchor           TEXT,          -- interval slots count from here (RFC 3339)
    retention_count           BIGINT NOT NULL CHECK (retention_count >= 1),
    retention_max_age_seconds BIGINT CHECK (retention_max_age_seconds > 0),
    compliance_grace_seconds  BIGINT NOT NULL DEFAULT 7200 CHECK (compliance_grace_seconds >= 0),
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    updated_by                TEXT,
    CHECK ((schedule_cron IS NULL) <> (schedule_interval_seconds IS NULL))
);

CREATE TABLE snapshot_policy_sets (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT    NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    description   TEXT,
    is_global     BOOLEAN NOT NULL DEFAULT TRUE,
    tenant_id     TEXT,
    tenant_name   TEXT,
    policies      TEXT    NOT NULL,          -- JSON array of policy names
    retention_map TEXT    NOT NULL,          -- JSON object policy -> count
    priority      BIGINT NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 1000),
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TEXT    NOT NULL,
    created_by    TEXT,
    updated_at    TEXT    NOT NULL,
    updated_by    TEXT,
    CHECK (is_global OR tenant_id IS NOT NULL)
);
-- One name per scope; a NULL tenant (global) counts as one scope.
CREATE UNIQUE INDEX snapshot_policy_sets_name_scope ON snapshot_policy_sets (name, COALESCE(tenant_id, ''));

CREATE TABLE snapshot_assignments (
    id                BIGSERIAL PRIMARY KEY,
    volume_id         TEXT    NOT NULL UNIQUE,
    volume_name       TEXT,
    tenant_id         TEXT    NOT NULL,
    tenant_name       TEXT,
    project_id        TEXT    NOT NULL,
    project_name      TEXT,
    vm_id             TEXT,
    vm_name           TEXT,
    -- Deleting a policy set that assignments use is refused instead of silently dropping them.
    policy_set_id     BIGINT REFERENCES snapshot_policy_sets (id) ON DELETE RESTRICT,
    auto_snapshot     BOOLEAN NOT NULL DEFAULT TRUE,
    policies          TEXT    NOT NULL,
    retention_map     TEXT    NOT NULL,
    assignment_source TEXT    NOT NULL DEFAULT 'manual',
    matched_rules     TEXT    NOT NULL DEFAULT '[]', -- JSON array of rule names
    created_at        TEXT    NOT NULL,
    created_by        TEXT,
    updated_at        TEXT    NOT NULL,
    updated_by        TEXT,
    last_verified_at  TEXT
);
CREATE INDEX snapshot_assignments_project ON snapshot_assignments (project_id);
CREATE INDEX snapshot_assignments_tenant ON snapshot_assignments (tenant_id);
CREATE INDEX snapshot_assignments_policy_set ON snapshot_assignments (policy_set_id);

CREATE TABLE snapshot_exclusions (
    id               BIGSERIAL PRIMARY KEY,
    volume_id        TEXT,                   -- a volume, or NULL for a whole project
    volume_name      TEXT,
    tenant_id        TEXT,
    tenant_name      TEXT,
    project_id       TEXT,
    project_name     TEXT,
    exclusion_reason TEXT,
    exclusion_source TEXT NOT NULL DEFAULT 'manual',
    created_at       TEXT NOT NULL,
    created_by       TEXT,
    expires_at       TEXT,
    CHECK (volume_id IS NOT NULL OR project_id IS NOT NULL)
);
CREATE UNIQUE INDEX snapshot_exclusions_volume ON snapshot_exclusions (volume_id) WHERE volume_id IS NOT NULL;
CREATE UNIQUE INDEX snapshot_exclusions_project ON snapshot_exclusions (project_id) WHERE volume_id IS NULL;
CREATE INDEX snapshot_exclusions_expires ON snapshot_exclusions (expires_at);
