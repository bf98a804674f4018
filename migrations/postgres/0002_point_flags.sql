-- What a source said about the numbers of a run, comma-separated: `sampled` (Metrica, GA4),
-- `thresholded` and `rolled_up` (GA4 `(other)` rows). Scores that use such points repeat the
-- flags in kr_scores.flags.
ALTER TABLE metric_points ADD COLUMN flags TEXT;
