-- The relay takes the oldest due entries first. With tens of thousands waiting (a large run on
-- SQLite), sorting every due entry on each claim took longer than the claims came; this index
-- hands them out in order.
CREATE INDEX outbox_order ON outbox (created_at, event_id);
