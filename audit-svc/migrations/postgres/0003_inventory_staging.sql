-- Inventory syncs are staged: each chunk of a SyncInventory stream is written here in its own
-- short transaction as it arrives, and the end message applies the staged rows to the inventory
-- tables in one transaction with set-based statements, then deletes them. The service's memory
-- stays bounded by one chunk, and no write transaction waits on the network. Rows of a stream
-- that broke off are deleted at once; those of a service that stopped meanwhile are deleted once
-- their stage has not been touched for a while. Staged rows are already in inventory form
-- (metadata read, JSON encoded); region, listed_at and first-seen times come at apply time.
-- The tables are UNLOGGED: staged rows need no crash safety (a crash breaks the stream that
-- wrote them), and skipping the WAL makes staging cheaper. The service's login role needs
-- SELECT, INSERT, UPDATE, DELETE on them and USAGE on inventory_stages_stage_seq.

-- One row per stream being received; `stage` keys its rows in the tables below.
CREATE UNLOGGED TABLE inventory_stages (
    stage      BIGSERIAL PRIMARY KEY,
    sync_id    TEXT NOT NULL,
    region     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    touched_at TEXT NOT NULL                         -- the latest staged chunk
);
CREATE INDEX inventory_stages_touched ON inventory_stages (touched_at);

-- The primary keys refuse an id sent twice in one stream.
CREATE UNLOGGED TABLE inventory_stage_domains (
    stage   BIGINT NOT NULL,
    id      TEXT   NOT NULL,
    name    TEXT   NOT NULL,
    enabled BIGINT NOT NULL,
    PRIMARY KEY (stage, id)
);

CREATE UNLOGGED TABLE inventory_stage_projects (
    stage     BIGINT NOT NULL,
    id        TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    domain_id TEXT   NOT NULL,
    enabled   BIGINT NOT NULL,
    PRIMARY KEY (stage, id)
);

CREATE UNLOGGED TABLE inventory_stage_servers (
    stage      BIGINT NOT NULL,
    id         TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    project_id TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    PRIMARY KEY (stage, id)
);

CREATE UNLOGGED TABLE inventory_stage_volumes (
    stage             BIGINT NOT NULL,
    id                TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    project_id        TEXT   NOT NULL,
    status            TEXT   NOT NULL,
    size_gb           BIGINT NOT NULL,
    volume_type       TEXT   NOT NULL,
    bootable          BIGINT NOT NULL,
    availability_zone TEXT   NOT NULL,
    vm_id             TEXT   NOT NULL,
    metadata          TEXT   NOT NULL,
    created_at        TEXT,
    updated_at        TEXT,
    PRIMARY KEY (stage, id)
);

-- The (volume, policy) pairs the staged volumes' metadata enrolls.
CREATE UNLOGGED TABLE inventory_stage_enrollments (
    stage           BIGINT NOT NULL,
    volume_id       TEXT   NOT NULL,
    policy_name     TEXT   NOT NULL,
    retention_count BIGINT NOT NULL,
    PRIMARY KEY (stage, volume_id, policy_name)
);

CREATE UNLOGGED TABLE inventory_stage_snapshots (
    stage               BIGINT NOT NULL,
    id                  TEXT   NOT NULL,
    name                TEXT   NOT NULL,
    volume_id           TEXT   NOT NULL,
    project_id          TEXT   NOT NULL,
    original_project_id TEXT   NOT NULL,
    status              TEXT   NOT NULL,
    size_gb             BIGINT NOT NULL,
    created_by          TEXT   NOT NULL,
    policy_name         TEXT   NOT NULL,
    slot                TEXT,
    held                BIGINT NOT NULL,
    created_at          TEXT   NOT NULL,
    PRIMARY KEY (stage, id)
);
