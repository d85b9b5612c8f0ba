-- The record queue's statements that PostgreSQL spells its own way (the rest are in
-- common.sql). Identifiers come from a trusted QueueSpec; every value is a bound :parameter.

-- name: enqueue
-- Inserts and wakes idle consumers in one round trip.
WITH inserted AS (
  INSERT INTO {table} (state, queued_at, process_after{columns})
  VALUES ('queued', :now, :process_after{values})
  RETURNING id
)
SELECT inserted.id FROM inserted, LATERAL (SELECT pg_notify('offload_queue', :queue)) AS woken;

-- name: dequeue
-- SKIP LOCKED lets concurrent consumers take different rows without waiting on each other.
WITH candidate AS (
  SELECT id FROM {table}
  WHERE state IN ('queued', 'errored') AND (process_after IS NULL OR process_after <= :now){scope}
  ORDER BY {order_by}
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS t
SET state = 'processing', started_at = {started}, last_heartbeat_at = :now, finished_at = NULL,
    failure_message = NULL, worker_hostname = :holder,
    lease_token = md5(random()::text || clock_timestamp()::text || t.id::text)
FROM candidate
WHERE t.id = candidate.id
RETURNING t.*;

-- name: heartbeat
UPDATE {table}
SET last_heartbeat_at = :now
WHERE id = ANY(:ids::bigint[]) AND state = 'processing' AND worker_hostname = :holder{scope}
RETURNING id, cancel;

-- name: mark_complete
-- Many leases at once (the coalescer's group commit); only rows still held by each lease.
-- The token stays in the row so that RETURNING tells which lease of a job was the holder's.
UPDATE {table}
SET state = CASE WHEN cancel THEN 'canceled' ELSE 'completed' END, finished_at = :now
WHERE state = 'processing' AND (id, worker_hostname, lease_token) IN (
  SELECT * FROM unnest(:ids::bigint[], :holders::text[], :tokens::text[])
)
RETURNING id, lease_token, state;

-- name: mark_errored
-- Cancel wins; otherwise retry after a backoff that doubles with each failure, up to a cap.
UPDATE {table}
SET state = CASE WHEN cancel THEN 'canceled'
                 WHEN num_failures + 1 > :max_retries THEN 'failed'
                 ELSE 'errored' END,
    num_failures = CASE WHEN cancel THEN num_failures ELSE num_failures + 1 END,
    process_after = CASE WHEN cancel OR num_failures + 1 > :max_retries THEN process_after
                         ELSE CAST(:now AS timestamptz) + make_interval(secs => LEAST(
                           CAST(:backoff AS float8) * power(2, LEAST(num_failures, 30)),
                           CAST(:max_backoff AS float8))) END,
    finished_at = :now, failure_message = :message, lease_token = NULL
WHERE id = :id AND state = 'processing' AND worker_hostname = :holder AND lease_token = :token
RETURNING state;

-- name: release
-- Back in line at its old place, as if it had never been taken (unless cancel was asked).
UPDATE {table}
SET state = CASE WHEN cancel THEN 'canceled' ELSE 'queued' END,
    finished_at = CASE WHEN cancel THEN CAST(:now AS timestamptz) ELSE NULL END,
    started_at = NULL, last_heartbeat_at = NULL, lease_token = NULL
WHERE id = :id AND state = 'processing' AND worker_hostname = :holder AND lease_token = :token
RETURNING id;

-- name: reset_stalled
-- queued_at is kept: a job its holder lost goes back to its old place in line, not the end.
UPDATE {table}
SET state = 'queued', started_at = NULL, num_resets = num_resets + 1, lease_token = NULL
WHERE id IN (
  SELECT id FROM {table}
  WHERE state = 'processing' AND last_heartbeat_at < :cutoff AND num_resets < :max_resets{scope}
  FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: fail_stalled
UPDATE {table}
SET state = 'failed', finished_at = :now, lease_token = NULL,
    failure_message = 'job processor died while handling this job too many times: '
      || num_resets || ' resets (max_resets = ' || :max_resets || '); the last holder, '
      || COALESCE(worker_hostname, '(unknown)') || ', stopped heartbeating'
WHERE id IN (
  SELECT id FROM {table}
  WHERE state = 'processing' AND last_heartbeat_at < :cutoff AND num_resets >= :max_resets{scope}
  FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: oldest_queued
SELECT MIN(GREATEST(queued_at, COALESCE(process_after, queued_at))) AS oldest
FROM {table} WHERE state IN ('queued', 'errored'){scope};
