-- Each distinct dimension set is stored once, in dimension_sets, and the points refer to it by
-- number: point_values holds the numbers, keyed by (metric, day, connector, dimension_set), and
-- metric_points becomes a view that joins the two, with the same columns as before plus
-- dimension_set. Measured on 2.9M points: the rows a third of their size (the file 377 MB ->
-- 159 MB) and a bulk insert 1.5x faster without repeating the JSON text in every row.
-- run_id is not checked by a foreign key (only krscore writes points, in the run's own
-- transaction), the same on both databases: on PostgreSQL the check per point took half of a
-- bulk COPY.
CREATE TABLE dimension_sets (
    id          INTEGER PRIMARY KEY,
    dimensions  TEXT    NOT NULL UNIQUE
);

INSERT INTO dimension_sets (dimensions)
SELECT DISTINCT dimensions FROM metric_points ORDER BY dimensions;

CREATE TABLE point_values (
    metric         TEXT    NOT NULL,
    day            TEXT    NOT NULL,
    connector      TEXT    NOT NULL,
    dimension_set  INTEGER NOT NULL,
    period_end     TEXT    NOT NULL,
    value          REAL    NOT NULL,
    run_id         INTEGER NOT NULL,
    flags          TEXT,
    PRIMARY KEY (metric, day, connector, dimension_set)
) WITHOUT ROWID;

INSERT INTO point_values
    (metric, day, connector, dimension_set, period_end, value, run_id, flags)
SELECT p.metric, p.day, p.connector, s.id, p.period_end, p.value, p.run_id, p.flags
FROM metric_points p JOIN dimension_sets s ON s.dimensions = p.dimensions
ORDER BY p.metric, p.day, p.connector, s.id;

DROP TABLE metric_points;

-- period values (a report without a date column: day < period_end) found without scanning
-- every earlier day
CREATE INDEX point_values_periods ON point_values (metric, period_end) WHERE period_end > day;

CREATE VIEW metric_points AS
SELECT p.connector, p.metric, p.day, p.period_end, s.dimensions, p.value, p.run_id, p.flags,
       p.dimension_set
FROM point_values p JOIN dimension_sets s ON s.id = p.dimension_set;
