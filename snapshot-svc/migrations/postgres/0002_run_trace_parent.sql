-- The W3C traceparent of the request that queued a run, so the worker that executes it (on any
-- replica, seconds later) continues that request's trace. Empty for scheduled runs.
ALTER TABLE snapshot_runs ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';
