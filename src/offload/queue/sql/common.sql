-- The record queue's statements that read the same in both dialects; postgres.sql and
-- sqlite.sql hold the rest. {table}, {order_by}, {columns} and {values} come from a trusted
-- QueueSpec; every value is a bound :parameter. {scope} narrows a queue that shares its table
-- with others to its own rows (QueueSpec.partition), and is empty otherwise.

-- name: enqueue_many
INSERT INTO {table} (state, queued_at, process_after{columns})
VALUES ('queued', :now, :process_after{values});

-- name: mark_failed
UPDATE {table}
SET state = CASE WHEN cancel THEN 'canceled' ELSE 'failed' END,
    num_failures = CASE WHEN cancel THEN num_failures ELSE num_failures + 1 END,
    finished_at = :now, failure_message = :message, lease_token = NULL
WHERE id = :id AND state = 'processing' AND worker_hostname = :holder AND lease_token = :token
RETURNING state;

-- name: cancel
-- A waiting record is canceled at once; a processing one is flagged for its holder's heartbeat.
UPDATE {table}
SET state = CASE WHEN state = 'processing' THEN state ELSE 'canceled' END,
    cancel = TRUE,
    finished_at = CASE WHEN state = 'processing' THEN finished_at ELSE :now END
WHERE id = :id AND state IN ('queued', 'errored', 'processing'){scope}
RETURNING state;

-- name: requeue
UPDATE {table}
SET state = 'queued', queued_at = :now, process_after = :process_after, started_at = NULL,
    last_heartbeat_at = NULL, finished_at = NULL, failure_message = NULL, cancel = FALSE,
    num_resets = 0, num_failures = 0, lease_token = NULL
WHERE id = :id AND state <> 'processing'{scope}
RETURNING id;

-- name: add_log_entry
INSERT INTO execution_logs
  (queue, record_id, attempt, key, command, start_time, exit_code, out, duration_ms)
SELECT :queue, id, num_resets + num_failures + 1, :key, :command, :start_time, :exit_code,
       :out, :duration_ms
FROM {table}
WHERE id = :id AND state = 'processing' AND worker_hostname = :holder AND lease_token = :token
RETURNING id;

-- name: started
-- A job leased in another's bundle starts when its first log entry says it did, not when
-- it was leased with the others (its started_at is NULL until then).
UPDATE {table} SET started_at = :start_time
WHERE id = :id AND state = 'processing' AND started_at IS NULL
  AND worker_hostname = :holder AND lease_token = :token;

-- name: update_log_entry
UPDATE execution_logs
SET key = :key, command = :command, start_time = :start_time, exit_code = :exit_code,
    out = :out, duration_ms = :duration_ms
WHERE id = :entry_id AND queue = :queue AND record_id = :id AND EXISTS (
  SELECT 1 FROM {table}
  WHERE id = :id AND state = 'processing' AND worker_hostname = :holder AND lease_token = :token
)
RETURNING id;

-- name: get
SELECT * FROM {table} WHERE id = :id{scope};

-- name: logs
SELECT * FROM execution_logs WHERE queue = :queue AND record_id = :id ORDER BY id;

-- name: logs_from
-- A live log's next read: the entries from :entry on, that one's output only from character
-- :start_char (1-based), and the length of every whole output.
SELECT id, attempt, key, command, start_time, exit_code, duration_ms, LENGTH(out) AS chars,
       CASE WHEN id = :entry THEN SUBSTR(out, :start_char) ELSE out END AS out
FROM execution_logs
WHERE queue = :queue AND record_id = :id AND id >= :entry
ORDER BY id;

-- name: counts
SELECT state, COUNT(*) AS n FROM {table} WHERE TRUE{scope} GROUP BY state;

-- name: delete_logs_before
DELETE FROM execution_logs
WHERE queue = :queue AND record_id IN (
  SELECT id FROM {table}
  WHERE state IN ('completed', 'failed', 'canceled') AND finished_at < :cutoff{scope}
);

-- name: delete_finished_before
DELETE FROM {table}
WHERE state IN ('completed', 'failed', 'canceled') AND finished_at < :cutoff{scope}
RETURNING id;
