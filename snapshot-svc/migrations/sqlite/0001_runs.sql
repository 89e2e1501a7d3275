-- snapshot-svc: runs with their steps, batches, events and quota blocks, the work items that make
-- creates crash-safe, the outbox that carries audit events to audit-svc, and the scheduler lease.
-- Times are RFC 3339 UTC text with microseconds (so text order is time order) and flags are
-- integers 0/1, so one query path serves SQLite and PostgreSQL through sqlx's Any driver.

CREATE TABLE snapshot_runs (
    id                  TEXT    PRIMARY KEY,           -- UUID v7
    kind                TEXT    NOT NULL CHECK (kind IN ('manual', 'scheduled')),
    status              TEXT    NOT NULL CHECK (status IN
                            ('pending', 'running', 'completed', 'partial', 'failed', 'cancelled', 'interrupted')),
    dry_run             INTEGER NOT NULL DEFAULT 0,
    triggered_by        TEXT    NOT NULL,              -- user name, or 'scheduler'
    scope               TEXT    NOT NULL DEFAULT '{}', -- JSON: project ids, policies, regions
    regions             TEXT    NOT NULL DEFAULT '[]', -- JSON array
    policies            TEXT    NOT NULL DEFAULT '[]', -- JSON array
    policy_volumes      TEXT    NOT NULL DEFAULT '{}', -- JSON: enrolled volumes per policy
    execution_host      TEXT,
    created_at          TEXT    NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    heartbeat_at        TEXT,
    cancel_requested_at TEXT,
    cancel_requested_by TEXT,
    counters            TEXT    NOT NULL DEFAULT '{}', -- JSON of the run counters
    total_batches       INTEGER NOT NULL DEFAULT 0,
    completed_batches   INTEGER NOT NULL DEFAULT 0,
    current_batch       INTEGER NOT NULL DEFAULT 0,
    batch_size_config   INTEGER NOT NULL DEFAULT 20,
    batch_delay_ms      INTEGER NOT NULL DEFAULT 0,
    progress_pct        REAL    NOT NULL DEFAULT 0,
    volumes_per_minute  REAL    NOT NULL DEFAULT 0,
    estimated_finish_at TEXT,
    rule_set_version    INTEGER NOT NULL DEFAULT 0,
    error_summary       TEXT    NOT NULL DEFAULT '',
    last_sequence       INTEGER NOT NULL DEFAULT 0     -- last event sequence number of the run
);
-- At most one active run of each kind: the database decides, not a check-then-insert.
CREATE UNIQUE INDEX snapshot_runs_one_active_per_kind ON snapshot_runs (kind)
    WHERE status IN ('pending', 'running');
CREATE INDEX snapshot_runs_created ON snapshot_runs (created_at);
CREATE INDEX snapshot_runs_status ON snapshot_runs (status);

CREATE TABLE snapshot_run_steps (
    run_id      TEXT    NOT NULL REFERENCES snapshot_runs (id),
    position    INTEGER NOT NULL,
    key         TEXT    NOT NULL,                      -- policy_assign, inventory_pre, snapshots, inventory_post
    label       TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'skipped')),
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, key)
);

CREATE TABLE snapshot_run_batches (
    run_id        TEXT    NOT NULL REFERENCES snapshot_runs (id),
    batch_number  INTEGER NOT NULL,
    region        TEXT    NOT NULL DEFAULT '',
    tenant_ids    TEXT    NOT NULL,                    -- JSON array of project ids
    tenant_names  TEXT    NOT NULL,                    -- JSON array of project names
    total_volumes INTEGER NOT NULL DEFAULT 0,
    completed     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0,
    quota_blocked INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'partial', 'failed', 'cancelled')),
    started_at    TEXT,
    finished_at   TEXT,
    error_message TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, batch_number)
);

-- What WatchRun streams: each event of a run with its sequence number (encoded WatchRunResponse),
-- so any replica can serve a watch and a client can resume after a sequence.
CREATE TABLE snapshot_run_events (
    run_id      TEXT    NOT NULL REFERENCES snapshot_runs (id),
    sequence    INTEGER NOT NULL,
    volume      INTEGER NOT NULL DEFAULT 0,            -- 1 for per-volume events (streamed on request)
    payload     BLOB    NOT NULL,
    PRIMARY KEY (run_id, sequence)
);

-- Quota blocks of a run (encoded QuotaBlock) for GetRun; audit-svc holds the durable record.
CREATE TABLE snapshot_quota_blocks (
    run_id      TEXT    NOT NULL REFERENCES snapshot_runs (id),
    position    INTEGER NOT NULL,
    payload     BLOB    NOT NULL,
    PRIMARY KEY (run_id, position)
);

-- A snapshot we are about to create, recorded before the create call so that a crash
-- mid-call is resolved by looking the snapshot up instead of creating it twice.
CREATE TABLE run_work_items (
    idempotency_key TEXT    PRIMARY KEY,               -- volume + policy + slot
    run_id          TEXT    NOT NULL REFERENCES snapshot_runs (id),
    volume_id       TEXT    NOT NULL,
    project_id      TEXT    NOT NULL,
    policy          TEXT    NOT NULL,
    slot            TEXT    NOT NULL,
    region          TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL DEFAULT 'creating'
                        CHECK (state IN ('creating', 'created', 'recovered', 'failed')),
    snapshot_id     TEXT,
    error           TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE INDEX run_work_items_run ON run_work_items (run_id, state);

-- Audit events written in the same transaction as the action they describe; a relay
-- delivers them to audit-svc and deletes them once acknowledged.
CREATE TABLE outbox (
    event_id        TEXT    PRIMARY KEY,               -- UUID v7, audit-svc dedupes on it
    run_id          TEXT,
    payload         BLOB    NOT NULL,                  -- encoded audit Event
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- Who schedules: one replica holds the lease and renews it.
CREATE TABLE scheduler_lease (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_tick_at TEXT
);
