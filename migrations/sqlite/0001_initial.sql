-- krscore schema (SQLite). The PostgreSQL migration of the same number creates the same
-- tables; BI tools read kr_scores, objective_scores and the *_latest views.

CREATE TABLE ingest_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connector       TEXT    NOT NULL,
    trigger         TEXT    NOT NULL,
    due_at          TEXT,
    replica         TEXT,
    started_at      TEXT    NOT NULL,
    finished_at     TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_read       INTEGER NOT NULL DEFAULT 0,
    rows_loaded     INTEGER NOT NULL DEFAULT 0,
    rows_rejected   INTEGER NOT NULL DEFAULT 0,
    rows_skipped    INTEGER NOT NULL DEFAULT 0,
    points_written  INTEGER NOT NULL DEFAULT 0,
    points_deleted  INTEGER NOT NULL DEFAULT 0,
    first_day       TEXT,
    last_day        TEXT,
    sources         TEXT,
    error           TEXT
);
CREATE INDEX ingest_runs_connector ON ingest_runs (connector, started_at);

CREATE TABLE metric_points (
    connector   TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    day         TEXT    NOT NULL,
    period_end  TEXT    NOT NULL,
    dimensions  TEXT    NOT NULL DEFAULT '{}',
    value       REAL    NOT NULL,
    run_id      INTEGER NOT NULL REFERENCES ingest_runs (id),
    PRIMARY KEY (connector, metric, day, dimensions)
);
CREATE INDEX metric_points_metric_day ON metric_points (metric, day);

CREATE TABLE rejected_rows (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES ingest_runs (id),
    connector   TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    line        INTEGER,
    reason      TEXT    NOT NULL,
    raw         TEXT
);
CREATE INDEX rejected_rows_run ON rejected_rows (run_id);

CREATE TABLE objectives (
    id              TEXT PRIMARY KEY,
    title           TEXT NOT NULL,
    owner           TEXT,
    period          TEXT NOT NULL,
    window_start    TEXT NOT NULL,
    window_end      TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    source_file     TEXT NOT NULL,
    active          INTEGER NOT NULL DEFAULT 1,
    updated_at      TEXT NOT NULL
);

CREATE TABLE key_results (
    id              TEXT PRIMARY KEY,
    objective_id    TEXT NOT NULL,
    position        INTEGER NOT NULL,
    title           TEXT NOT NULL,
    metric          TEXT NOT NULL,
    metric_kind     TEXT NOT NULL,
    unit            TEXT,
    filter          TEXT NOT NULL DEFAULT '{}',
    kr_type         TEXT,
    baseline_spec   TEXT,
    target_spec     TEXT NOT NULL,
    weight          REAL NOT NULL,
    revisions       TEXT NOT NULL DEFAULT '[]',
    budget          REAL,
    spend_metric    TEXT,
    window_start    TEXT NOT NULL,
    window_end      TEXT NOT NULL,
    active          INTEGER NOT NULL DEFAULT 1,
    updated_at      TEXT NOT NULL
);

CREATE TABLE scoring_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger         TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    as_of_from      TEXT NOT NULL,
    as_of_to        TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_written    INTEGER NOT NULL DEFAULT 0,
    error           TEXT
);

CREATE TABLE kr_scores (
    kr_id           TEXT    NOT NULL,
    objective_id    TEXT    NOT NULL,
    as_of           TEXT    NOT NULL,
    window_start    TEXT    NOT NULL,
    window_end      TEXT    NOT NULL,
    elapsed         REAL    NOT NULL,
    kr_type         TEXT,
    value           REAL,
    baseline        REAL,
    target          REAL,
    target_original REAL,
    target_effective TEXT,
    target_low      REAL,
    target_high     REAL,
    distance        REAL,
    raw             REAL,
    score           REAL,
    score_original  REAL,
    grade           TEXT,
    expected        REAL,
    expected_score  REAL,
    status          TEXT,
    forecast        REAL,
    forecast_score  REAL,
    spend           REAL,
    budget          REAL,
    budget_used     REAL,
    cost_per_point  REAL,
    stale           INTEGER NOT NULL DEFAULT 0,
    data_as_of      TEXT,
    flags           TEXT,
    source_runs     TEXT,
    definition_hash TEXT NOT NULL,
    reason          TEXT,
    scoring_run_id  INTEGER NOT NULL REFERENCES scoring_runs (id),
    computed_at     TEXT    NOT NULL,
    PRIMARY KEY (kr_id, as_of)
);

CREATE TABLE objective_scores (
    objective_id    TEXT    NOT NULL,
    as_of           TEXT    NOT NULL,
    score           REAL,
    grade           TEXT,
    krs_scored      INTEGER NOT NULL,
    krs_total       INTEGER NOT NULL,
    scoring_run_id  INTEGER NOT NULL REFERENCES scoring_runs (id),
    computed_at     TEXT    NOT NULL,
    PRIMARY KEY (objective_id, as_of)
);

CREATE TABLE okr_reviews (
    period          TEXT    NOT NULL,
    kr_id           TEXT    NOT NULL,
    objective_id    TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    as_of           TEXT    NOT NULL,
    score           REAL,
    raw             REAL,
    zone            TEXT,
    reviewed_at     TEXT    NOT NULL,
    PRIMARY KEY (period, kr_id)
);

-- one row per scheduled run: replicas claim a run here, renew the lease while it runs, and
-- take over a run whose lease expired
CREATE TABLE run_claims (
    task            TEXT    NOT NULL,
    due_at          TEXT    NOT NULL,
    claimed_by      TEXT    NOT NULL,
    lease_until     TEXT    NOT NULL,
    finished        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task, due_at)
);

CREATE VIEW kr_scores_latest AS
SELECT s.*, k.title AS kr_title, k.metric, k.unit, o.title AS objective_title, o.owner, o.period
FROM kr_scores s
JOIN key_results k ON k.id = s.kr_id
JOIN objectives o ON o.id = s.objective_id
WHERE k.active = 1
  AND s.as_of = (SELECT max(t.as_of) FROM kr_scores t WHERE t.kr_id = s.kr_id);

CREATE VIEW objective_scores_latest AS
SELECT s.*, o.title AS objective_title, o.owner, o.period
FROM objective_scores s
JOIN objectives o ON o.id = s.objective_id
WHERE o.active = 1
  AND s.as_of = (SELECT max(t.as_of) FROM objective_scores t WHERE t.objective_id = s.objective_id);
