-- metric_points keyed by (metric, day, connector, dimensions) and stored in that order
-- (WITHOUT ROWID): the scorer reads a metric's days as one range of the key, in the order it
-- sums them, and a sync writes one B-tree instead of a table, its key index and a
-- (metric, day) index. Measured on 2.9M points: the file half the size, the write 2.5x faster.
CREATE TABLE metric_points_by_metric (
    connector   TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    day         TEXT    NOT NULL,
    period_end  TEXT    NOT NULL,
    dimensions  TEXT    NOT NULL DEFAULT '{}',
    value       REAL    NOT NULL,
    run_id      INTEGER NOT NULL REFERENCES ingest_runs (id),
    flags       TEXT,
    PRIMARY KEY (metric, day, connector, dimensions)
) WITHOUT ROWID;

INSERT INTO metric_points_by_metric
    (connector, metric, day, period_end, dimensions, value, run_id, flags)
SELECT connector, metric, day, period_end, dimensions, value, run_id, flags
FROM metric_points
ORDER BY metric, day, connector, dimensions;

DROP TABLE metric_points;
ALTER TABLE metric_points_by_metric RENAME TO metric_points;

-- period values (a report without a date column: day < period_end) found without scanning
-- every earlier day
CREATE INDEX metric_points_periods ON metric_points (metric, period_end) WHERE period_end > day;
