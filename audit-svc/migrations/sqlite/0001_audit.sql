-- audit-svc: the system of record.
--
-- Audit tables (snapshot_records, snapshot_quota_blocks, run_summaries, compliance_daily) are
-- append-only: the service has no UPDATE or DELETE statement for them, and on PostgreSQL it
-- writes them as the NOLOGIN role snapkeeper_audit_writer, which holds only SELECT and INSERT
-- (SQLite has no roles: the absence of UPDATE/DELETE statements is the guarantee there).
-- Inventory tables hold the latest view of each region and are replaced per sync.
-- Times are RFC 3339 UTC text with a fixed six-digit fraction ("2026-11-25T00:00:00.000000Z"), so
-- text order is time order and one query path serves SQLite and PostgreSQL. Flags are 0/1 BIGINT
-- (the sqlx Any driver cannot decode SQLite booleans). Empty text means "not set".

-- Every event, one row each; `seq` is the record id. Kind-specific figures live in
-- snapshot_quota_blocks and run_summaries under the same event_id.
CREATE TABLE snapshot_records (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            TEXT   NOT NULL UNIQUE,      -- client-generated UUID v7; repeats are ignored
    kind                TEXT   NOT NULL,             -- run_started ... snapshot_created ... role_granted
    occurred_at         TEXT   NOT NULL,
    recorded_at         TEXT   NOT NULL,
    run_id              TEXT   NOT NULL,
    actor               TEXT   NOT NULL,             -- user name, or 'scheduler'
    dry_run             BIGINT NOT NULL,
    region              TEXT   NOT NULL,
    volume_id           TEXT   NOT NULL,
    volume_name         TEXT   NOT NULL,
    project_id          TEXT   NOT NULL,
    project_name        TEXT   NOT NULL,
    domain_id           TEXT   NOT NULL,
    domain_name         TEXT   NOT NULL,
    vm_id               TEXT   NOT NULL,
    vm_name             TEXT   NOT NULL,
    policy_name         TEXT   NOT NULL,
    slot                TEXT,
    snapshot_id         TEXT   NOT NULL,
    snapshot_name       TEXT   NOT NULL,
    snapshot_project_id TEXT   NOT NULL,
    size_gb             BIGINT NOT NULL,
    snapshot_created_at TEXT,                        -- the seed's openstack_created_at
    retention_count     BIGINT NOT NULL,             -- the seed's retention_days (a count)
    scope_mode          TEXT   NOT NULL,             -- service_user, admin_fallback, admin_only
    cinder_request_id   TEXT   NOT NULL,
    error_message       TEXT   NOT NULL,
    skip_reason         TEXT   NOT NULL,
    dry_run_action      TEXT   NOT NULL,
    recovered           BIGINT NOT NULL,
    role_name           TEXT   NOT NULL,
    detail              TEXT   NOT NULL
);
CREATE INDEX snapshot_records_time ON snapshot_records (occurred_at, seq);
CREATE INDEX snapshot_records_run ON snapshot_records (run_id, occurred_at);
CREATE INDEX snapshot_records_volume_policy ON snapshot_records (volume_id, policy_name, occurred_at);
CREATE INDEX snapshot_records_project_time ON snapshot_records (project_id, occurred_at);
CREATE INDEX snapshot_records_domain_time ON snapshot_records (domain_id, occurred_at);
CREATE INDEX snapshot_records_kind_time ON snapshot_records (kind, occurred_at);
CREATE INDEX snapshot_records_snapshot ON snapshot_records (snapshot_id);

-- Quota figures of each snapshot_quota_blocked event (seed snapshot_quota_blocks), with the
-- filter columns repeated so ListQuotaBlocks and compliance read this small table first.
CREATE TABLE snapshot_quota_blocks (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id              TEXT   NOT NULL UNIQUE REFERENCES snapshot_records (event_id),
    occurred_at           TEXT   NOT NULL,
    run_id                TEXT   NOT NULL,
    region                TEXT   NOT NULL,
    volume_id             TEXT   NOT NULL,
    project_id            TEXT   NOT NULL,
    domain_id             TEXT   NOT NULL,
    policy_name           TEXT   NOT NULL,
    block_reason          TEXT   NOT NULL,           -- gigabytes_exceeded, snapshots_exceeded, ...
    volume_type           TEXT   NOT NULL,
    quota_limit_gb        BIGINT NOT NULL,
    quota_used_gb         BIGINT NOT NULL,
    quota_needed_gb       BIGINT NOT NULL,
    snapshot_quota_limit  BIGINT NOT NULL,
    snapshot_quota_used   BIGINT NOT NULL,
    snapshot_quota_needed BIGINT NOT NULL
);
CREATE INDEX snapshot_quota_blocks_time ON snapshot_quota_blocks (occurred_at);
CREATE INDEX snapshot_quota_blocks_run ON snapshot_quota_blocks (run_id);
CREATE INDEX snapshot_quota_blocks_volume ON snapshot_quota_blocks (volume_id, policy_name, occurred_at);

-- The run-level payload of each run event (started, step, batch, finished): the queried fields as
-- columns, and the payload message exactly as sent (protobuf encoding of RunStarted,
-- RunStepChange, RunBatch or RunFinished).
CREATE TABLE run_summaries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT   NOT NULL UNIQUE REFERENCES snapshot_records (event_id),
    run_id       TEXT   NOT NULL,
    kind         TEXT   NOT NULL,                    -- run_started, run_step, run_batch, run_finished
    occurred_at  TEXT   NOT NULL,
    run_kind     TEXT   NOT NULL,                    -- manual, scheduled (run_started)
    status       TEXT   NOT NULL,                    -- run status (run_finished) or phase status
    step         TEXT   NOT NULL,                    -- run_step
    batch_number BIGINT NOT NULL,                    -- run_batch
    payload      BLOB   NOT NULL
);
CREATE INDEX run_summaries_run ON run_summaries (run_id, kind, seq);
CREATE INDEX run_summaries_started ON run_summaries (kind, occurred_at);

-- Daily compliance roll-ups, appended: one row per (domain, project, policy) per roll-up, all rows
-- of one roll-up sharing recorded_at. The trend sums the latest roll-up of each day.
CREATE TABLE compliance_daily (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    day           TEXT   NOT NULL,                   -- YYYY-MM-DD (UTC)
    recorded_at   TEXT   NOT NULL,
    domain_id     TEXT   NOT NULL,
    domain_name   TEXT   NOT NULL,
    project_id    TEXT   NOT NULL,
    project_name  TEXT   NOT NULL,
    policy_name   TEXT   NOT NULL,
    compliant     BIGINT NOT NULL,
    missing       BIGINT NOT NULL,
    pending       BIGINT NOT NULL,
    quota_blocked BIGINT NOT NULL,
    excluded      BIGINT NOT NULL
);
CREATE INDEX compliance_daily_day ON compliance_daily (day, recorded_at);

-- Inventory: the latest applied view per region.
CREATE TABLE inventory_regions (
    region     TEXT PRIMARY KEY,
    sync_id    TEXT NOT NULL,
    listed_at  TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- Every applied sync and its result (a resent sync_id answers from here).
CREATE TABLE inventory_syncs (
    sync_id               TEXT PRIMARY KEY,
    region                TEXT   NOT NULL,
    listed_at             TEXT   NOT NULL,
    applied_at            TEXT   NOT NULL,
    run_id                TEXT   NOT NULL,
    source                TEXT   NOT NULL,
    domain_count          BIGINT NOT NULL,
    project_count         BIGINT NOT NULL,
    server_count          BIGINT NOT NULL,
    volume_count          BIGINT NOT NULL,
    snapshot_count        BIGINT NOT NULL,
    volumes_added         BIGINT NOT NULL,
    volumes_disappeared   BIGINT NOT NULL,
    snapshots_disappeared BIGINT NOT NULL
);

-- Volumes that left the view, with when they were last seen.
CREATE TABLE inventory_disappeared_volumes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_id        TEXT NOT NULL,
    region         TEXT NOT NULL,
    volume_id      TEXT NOT NULL,
    volume_name    TEXT NOT NULL,
    project_id     TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL,
    disappeared_at TEXT NOT NULL
);
CREATE INDEX inventory_disappeared_sync ON inventory_disappeared_volumes (sync_id, seq);
CREATE INDEX inventory_disappeared_volume ON inventory_disappeared_volumes (region, volume_id);

CREATE TABLE inventory_domains (
    region       TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    enabled      BIGINT NOT NULL,
    last_seen_at TEXT   NOT NULL,
    PRIMARY KEY (region, id)
);

CREATE TABLE inventory_projects (
    region       TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    domain_id    TEXT   NOT NULL,
    enabled      BIGINT NOT NULL,
    last_seen_at TEXT   NOT NULL,
    PRIMARY KEY (region, id)
);

CREATE TABLE inventory_servers (
    region       TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    status       TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    PRIMARY KEY (region, id)
);

CREATE TABLE inventory_volumes (
    region            TEXT   NOT NULL,
    id                TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    project_id        TEXT   NOT NULL,
    status            TEXT   NOT NULL,
    size_gb           BIGINT NOT NULL,
    volume_type       TEXT   NOT NULL,
    bootable          BIGINT NOT NULL,
    availability_zone TEXT   NOT NULL,
    vm_id             TEXT   NOT NULL,               -- first attachment
    metadata          TEXT   NOT NULL,               -- JSON object
    created_at        TEXT,
    updated_at        TEXT,
    first_seen_at     TEXT   NOT NULL,
    last_seen_at      TEXT   NOT NULL,
    PRIMARY KEY (region, id)
);
CREATE INDEX inventory_volumes_project ON inventory_volumes (project_id);

-- Enrolled (volume, policy) pairs of the view, derived from the volume metadata at sync time;
-- enrolled_at is when the pair was first seen enrolled and survives later syncs.
CREATE TABLE inventory_enrollments (
    region          TEXT   NOT NULL,
    volume_id       TEXT   NOT NULL,
    policy_name     TEXT   NOT NULL,
    retention_count BIGINT NOT NULL,                 -- 0: the metadata names none
    enrolled_at     TEXT   NOT NULL,
    PRIMARY KEY (region, volume_id, policy_name)
);
CREATE INDEX inventory_enrollments_policy ON inventory_enrollments (policy_name);

CREATE TABLE inventory_snapshots (
    region              TEXT   NOT NULL,
    id                  TEXT   NOT NULL,
    name                TEXT   NOT NULL,
    volume_id           TEXT   NOT NULL,             -- original_volume_id metadata, else Cinder's
    project_id          TEXT   NOT NULL,             -- where the snapshot lives
    original_project_id TEXT   NOT NULL,             -- original_project_id metadata, else project_id
    status              TEXT   NOT NULL,
    size_gb             BIGINT NOT NULL,
    created_by          TEXT   NOT NULL,             -- metadata created_by
    policy_name         TEXT   NOT NULL,             -- metadata policy
    slot                TEXT,                        -- metadata slot
    held                BIGINT NOT NULL,             -- metadata snapkeeper_hold=true
    created_at          TEXT   NOT NULL,
    last_seen_at        TEXT   NOT NULL,
    PRIMARY KEY (region, id)
);
CREATE INDEX inventory_snapshots_volume_policy ON inventory_snapshots (region, volume_id, policy_name);
CREATE INDEX inventory_snapshots_created_by ON inventory_snapshots (created_by, created_at);
