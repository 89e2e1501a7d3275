-- When policy assignment last ran (a run's policy_assign step or the scheduler's own pass every
-- POLICY_ASSIGN_INTERVAL_MINUTES), so the leader knows when the next pass is due.
ALTER TABLE scheduler_lease ADD COLUMN last_assign_at TEXT;
