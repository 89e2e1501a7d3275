-- audit-svc: the system of record. Audit tables are append-only: the service has no UPDATE or
-- DELETE path for them. Inventory tables hold the latest view of the cloud, replaced per sync.
-- Times are RFC 3339 UTC text so one query path serves SQLite and PostgreSQL.

CREATE TABLE snapshot_records (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id             TEXT    NOT NULL UNIQUE,      -- client-generated UUID v7; repeats are ignored
    occurred_at          TEXT    NOT NULL,
    recorded_at          TEXT    NOT NULL,
    run_id               TEXT,
    actor                TEXT    NOT NULL,             -- user name, or 'scheduler'
    action               TEXT    NOT NULL,             -- created, deleted, failed, skipped, quota_blocked, dry_run, run_*
    status               TEXT    NOT NULL,             -- OK, ERROR, SKIPPED, QUOTA_BLOCKED, DRY_RUN (seed values)
    reason               TEXT,
    region               TEXT,
    volume_id            TEXT,
    volume_name          TEXT,
    project_id           TEXT,
    project_name         TEXT,
    domain_id            TEXT,
    domain_name          TEXT,
    vm_id                TEXT,
    vm_name              TEXT,
    policy_name          TEXT,
    slot                 TEXT,
    snapshot_id          TEXT,
    snapshot_name        TEXT,
    size_gb              INTEGER,
    retention_count      INTEGER,
    scope_mode           TEXT,                         -- service_user, admin_fallback, admin_only
    cinder_request_id    TEXT,
    openstack_created_at TEXT,
    error_message        TEXT,
    details              TEXT                          -- JSON with kind-specific fields
);
CREATE INDEX snapshot_records_run ON snapshot_records (run_id);
CREATE INDEX snapshot_records_volume_policy ON snapshot_records (volume_id, policy_name, occurred_at);
CREATE INDEX snapshot_records_project_time ON snapshot_records (project_id, occurred_at);
CREATE INDEX snapshot_records_domain_time ON snapshot_records (domain_id, occurred_at);
CREATE INDEX snapshot_records_action_time ON snapshot_records (action, occurred_at);
CREATE INDEX snapshot_records_time ON snapshot_records (occurred_at);

CREATE TABLE snapshot_quota_blocks (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id             TEXT    NOT NULL UNIQUE,
    occurred_at          TEXT    NOT NULL,
    run_id               TEXT,
    region               TEXT,
    volume_id            TEXT    NOT NULL,
    volume_name          TEXT,
    volume_size_gb       INTEGER,
    project_id           TEXT    NOT NULL,
    project_name         TEXT,
    domain_id            TEXT,
    domain_name          TEXT,
    policy_name          TEXT,
    quota_limit_gb       INTEGER,
    quota_used_gb        INTEGER,
    quota_needed_gb      INTEGER,
    snapshot_quota_limit INTEGER,
    snapshot_quota_used  INTEGER,
    block_reason         TEXT    NOT NULL              -- gigabytes_exceeded, snapshots_exceeded, cinder_413
);
CREATE INDEX snapshot_quota_blocks_run ON snapshot_quota_blocks (run_id);
CREATE INDEX snapshot_quota_blocks_volume ON snapshot_quota_blocks (volume_id, occurred_at);

-- One row per run lifecycle event (started, step, batch, finished), append-only.
CREATE TABLE run_summaries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL UNIQUE,
    run_id      TEXT    NOT NULL,
    occurred_at TEXT    NOT NULL,
    kind        TEXT    NOT NULL,                      -- run_started, step, batch, run_finished
    status      TEXT,
    details     TEXT    NOT NULL                       -- JSON: counters, step or batch fields
);
CREATE INDEX run_summaries_run ON run_summaries (run_id, seq);

CREATE TABLE inventory_syncs (
    id          TEXT PRIMARY KEY,
    region      TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    volumes     INTEGER NOT NULL DEFAULT 0,
    snapshots   INTEGER NOT NULL DEFAULT 0,
    projects    INTEGER NOT NULL DEFAULT 0,
    domains     INTEGER NOT NULL DEFAULT 0,
    disappeared INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE inventory_domains (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);

CREATE TABLE inventory_projects (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    domain_id    TEXT,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX inventory_projects_domain ON inventory_projects (domain_id);

CREATE TABLE inventory_volumes (
    id                TEXT PRIMARY KEY,
    name              TEXT,
    project_id        TEXT NOT NULL,
    region            TEXT,
    size_gb           INTEGER NOT NULL,
    volume_type       TEXT,
    status            TEXT NOT NULL,
    bootable          BOOLEAN NOT NULL DEFAULT 0,
    vm_id             TEXT,
    vm_name           TEXT,
    auto_snapshot     BOOLEAN NOT NULL DEFAULT 0,
    policies          TEXT,                            -- CSV as in the volume metadata
    metadata          TEXT NOT NULL DEFAULT '{}',      -- JSON
    enrolled_at       TEXT,                            -- first seen with auto_snapshot=true
    last_seen_at      TEXT NOT NULL,
    disappeared_at    TEXT
);
CREATE INDEX inventory_volumes_project ON inventory_volumes (project_id);

CREATE TABLE inventory_snapshots (
    id            TEXT PRIMARY KEY,
    name          TEXT,
    volume_id     TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    region        TEXT,
    size_gb       INTEGER,
    status        TEXT NOT NULL,
    created_by    TEXT,                                -- snapshot metadata created_by
    policy_name   TEXT,                                -- snapshot metadata policy
    slot          TEXT,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
);
CREATE INDEX inventory_snapshots_volume_policy ON inventory_snapshots (volume_id, policy_name, created_at);

CREATE TABLE compliance_daily (
    day            TEXT    NOT NULL,                   -- YYYY-MM-DD (UTC)
    domain_id      TEXT    NOT NULL DEFAULT '',
    project_id     TEXT    NOT NULL DEFAULT '',
    policy_name    TEXT    NOT NULL DEFAULT '',
    compliant      INTEGER NOT NULL,
    pending        INTEGER NOT NULL,
    quota_blocked  INTEGER NOT NULL,
    missing        INTEGER NOT NULL,
    excluded       INTEGER NOT NULL,
    recorded_at    TEXT    NOT NULL,
    PRIMARY KEY (day, domain_id, project_id, policy_name)
);
