-- metric_points keyed by (metric, day, connector, dimensions): the key's index serves the
-- scorer's reads of a metric over a range of days, in the order it sums them, so the
-- separate (metric, day) index goes and a sync maintains one index instead of two.
ALTER TABLE metric_points DROP CONSTRAINT metric_points_pkey;
ALTER TABLE metric_points ADD PRIMARY KEY (metric, day, connector, dimensions);
DROP INDEX metric_points_metric_day;

-- period values (a report without a date column: day < period_end) found without scanning
-- every earlier day of a metric
CREATE INDEX metric_points_periods ON metric_points (metric, period_end) WHERE period_end > day;
