-- krscore schema (PostgreSQL). The SQLite migration of the same number creates the same
-- tables; BI tools read kr_scores, objective_scores and the *_latest views.

CREATE TABLE ingest_runs (
    id              BIGSERIAL PRIMARY KEY,
    connector       TEXT    NOT NULL,
    trigger         TEXT    NOT NULL,
    due_at          TIMESTAMPTZ,
    replica         TEXT,
    started_at      TIMESTAMPTZ    NOT NULL,
    finished_at     TIMESTAMPTZ,
    status          TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_read       BIGINT NOT NULL DEFAULT 0,
    rows_loaded     BIGINT NOT NULL DEFAULT 0,
    rows_rejected   BIGINT NOT NULL DEFAULT 0,
    rows_skipped    BIGINT NOT NULL DEFAULT 0,
    points_written  BIGINT NOT NULL DEFAULT 0,
    points_deleted  BIGINT NOT NULL DEFAULT 0,
    first_day       DATE,
    last_day        DATE,
    sources         TEXT,
    error           TEXT
);
CREATE INDEX ingest_runs_connector ON ingest_runs (connector, started_at);

CREATE TABLE metric_points (
    connector   TEXT    NOT NULL,
    metric      TEXT    NOT NULL,
    day         DATE    NOT NULL,
    period_end  DATE    NOT NULL,
    dimensions  JSONB   NOT NULL DEFAULT '{}',
    value       DOUBLE PRECISION    NOT NULL,
    run_id      BIGINT NOT NULL REFERENCES ingest_runs (id),
    PRIMARY KEY (connector, metric, day, dimensions)
);
CREATE INDEX metric_points_metric_day ON metric_points (metric, day);

CREATE TABLE rejected_rows (
    id          BIGSERIAL PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES ingest_runs (id),
    connector   TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    line        BIGINT,
    reason      TEXT    NOT NULL,
    raw         TEXT
);
CREATE INDEX rejected_rows_run ON rejected_rows (run_id);

CREATE TABLE objectives (
    id              TEXT PRIMARY KEY,
    title           TEXT NOT NULL,
    owner           TEXT,
    period          TEXT NOT NULL,
    window_start    DATE NOT NULL,
    window_end      DATE NOT NULL,
    timezone        TEXT NOT NULL,
    source_file     TEXT NOT NULL,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE key_results (
    id              TEXT PRIMARY KEY,
    objective_id    TEXT NOT NULL,
    position        BIGINT NOT NULL,
    title           TEXT NOT NULL,
    metric          TEXT NOT NULL,
    metric_kind     TEXT NOT NULL,
    unit            TEXT,
    filter          JSONB NOT NULL DEFAULT '{}',
    kr_type         TEXT,
    baseline_spec   TEXT,
    target_spec     TEXT NOT NULL,
    weight          DOUBLE PRECISION NOT NULL,
    revisions       JSONB NOT NULL DEFAULT '[]',
    budget          DOUBLE PRECISION,
    spend_metric    TEXT,
    window_start    DATE NOT NULL,
    window_end      DATE NOT NULL,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE scoring_runs (
    id              BIGSERIAL PRIMARY KEY,
    trigger         TEXT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    as_of_from      DATE NOT NULL,
    as_of_to        DATE NOT NULL,
    definition_hash TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_written    BIGINT NOT NULL DEFAULT 0,
    error           TEXT
);

CREATE TABLE kr_scores (
    kr_id           TEXT    NOT NULL,
    objective_id    TEXT    NOT NULL,
    as_of           DATE    NOT NULL,
    window_start    DATE    NOT NULL,
    window_end      DATE    NOT NULL,
    elapsed         DOUBLE PRECISION    NOT NULL,
    kr_type         TEXT,
    value           DOUBLE PRECISION,
    baseline        DOUBLE PRECISION,
    target          DOUBLE PRECISION,
    target_original DOUBLE PRECISION,
    target_effective DATE,
    target_low      DOUBLE PRECISION,
    target_high     DOUBLE PRECISION,
    distance        DOUBLE PRECISION,
    raw             DOUBLE PRECISION,
    score           DOUBLE PRECISION,
    score_original  DOUBLE PRECISION,
    grade           TEXT,
    expected        DOUBLE PRECISION,
    expected_score  DOUBLE PRECISION,
    status          TEXT,
    forecast        DOUBLE PRECISION,
    forecast_score  DOUBLE PRECISION,
    spend           DOUBLE PRECISION,
    budget          DOUBLE PRECISION,
    budget_used     DOUBLE PRECISION,
    cost_per_point  DOUBLE PRECISION,
    stale           BOOLEAN NOT NULL DEFAULT FALSE,
    data_as_of      DATE,
    flags           TEXT,
    source_runs     TEXT,
    definition_hash TEXT NOT NULL,
    reason          TEXT,
    scoring_run_id  BIGINT NOT NULL REFERENCES scoring_runs (id),
    computed_at     TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (kr_id, as_of)
);

CREATE TABLE objective_scores (
    objective_id    TEXT    NOT NULL,
    as_of           DATE    NOT NULL,
    score           DOUBLE PRECISION,
    grade           TEXT,
    krs_scored      BIGINT NOT NULL,
    krs_total       BIGINT NOT NULL,
    scoring_run_id  BIGINT NOT NULL REFERENCES scoring_runs (id),
    computed_at     TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (objective_id, as_of)
);

CREATE TABLE okr_reviews (
    period          TEXT    NOT NULL,
    kr_id           TEXT    NOT NULL,
    objective_id    TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    as_of           DATE    NOT NULL,
    score           DOUBLE PRECISION,
    raw             DOUBLE PRECISION,
    zone            TEXT,
    reviewed_at     TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (period, kr_id)
);

-- one row per scheduled run: replicas claim a run here, renew the lease while it runs, and
-- take over a run whose lease expired
CREATE TABLE run_claims (
    task            TEXT    NOT NULL,
    due_at          TIMESTAMPTZ    NOT NULL,
    claimed_by      TEXT    NOT NULL,
    lease_until     TIMESTAMPTZ    NOT NULL,
    finished        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (task, due_at)
);

CREATE VIEW kr_scores_latest AS
SELECT s.*, k.title AS kr_title, k.metric, k.unit, o.title AS objective_title, o.owner, o.period
FROM kr_scores s
JOIN key_results k ON k.id = s.kr_id
JOIN objectives o ON o.id = s.objective_id
WHERE k.active
  AND s.as_of = (SELECT max(t.as_of) FROM kr_scores t WHERE t.kr_id = s.kr_id);

CREATE VIEW objective_scores_latest AS
SELECT s.*, o.title AS objective_title, o.owner, o.period
FROM objective_scores s
JOIN objectives o ON o.id = s.objective_id
WHERE o.active
  AND s.as_of = (SELECT max(t.as_of) FROM objective_scores t WHERE t.objective_id = s.objective_id);
