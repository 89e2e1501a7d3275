-- Watch events written by actions but not numbered yet. An action inserts here without touching
-- its run's row, so parallel project workers do not queue on that row's lock through every
-- commit; readers move committed ones into snapshot_run_events with the next sequence numbers,
-- so a sequence is never given to an event a reader has not yet been able to see.
CREATE TABLE snapshot_run_pending_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT    NOT NULL,
    volume      INTEGER NOT NULL DEFAULT 0,
    payload     BLOB    NOT NULL
);

CREATE INDEX snapshot_run_pending_events_run ON snapshot_run_pending_events (run_id, id);
