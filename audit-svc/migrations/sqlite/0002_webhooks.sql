-- Webhook notifications, append-only like the audit tables: a delivery is one notification to
-- one URL, its attempts are rows, and its state is its latest attempt. Nothing is updated, so a
-- restart resumes every delivery that has no final attempt.
CREATE TABLE webhook_deliveries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,              -- UUID v7, sent as X-Snapkeeper-Delivery
    url         TEXT NOT NULL,
    source      TEXT NOT NULL,                     -- what caused it, e.g. run_finished:<event id>
    kind        TEXT NOT NULL,                     -- run.finished, compliance.below_threshold, quota.forecast_risk
    body        TEXT NOT NULL,                     -- the JSON body exactly as signed and sent
    created_at  TEXT NOT NULL,
    UNIQUE (url, source)                           -- one notification per cause and URL
);

CREATE TABLE webhook_attempts (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT   NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempted_at    TEXT   NOT NULL,
    status_code     BIGINT NOT NULL,               -- 0: no HTTP answer
    error           TEXT   NOT NULL,               -- why it failed; never a secret
    outcome         TEXT   NOT NULL,               -- delivered, retry, gave_up
    next_attempt_at TEXT                           -- retry only
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, seq);

-- Compliance below/above the alert threshold per scope ('overall' or 'policy:<name>'), one row
-- per change: the latest row of a scope is its state, so a crossing notifies once.
CREATE TABLE compliance_alerts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    scope       TEXT   NOT NULL,
    below       BIGINT NOT NULL,
    ratio       REAL NOT NULL,
    threshold   REAL NOT NULL,
    observed_at TEXT   NOT NULL
);
CREATE INDEX compliance_alerts_scope ON compliance_alerts (scope, seq);
