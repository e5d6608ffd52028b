-- The console's performance view over a million cases: each case counted once, when it is
-- first written, into a daily rollup by detector, track, model version, action and score
-- bucket (twentieths), so alert volume and score distributions read a few hundred rows
-- instead of every case (p95 1.9 s -> milliseconds at 1M, bench/console_bench.py). The
-- labelled cases, which precision and the precision-recall curve read, get a covering
-- partial index: labels are a small share of the cases and change, so they are read live.
CREATE TABLE case_daily (
    day             date NOT NULL,
    detector        text NOT NULL,
    track           text NOT NULL,
    model_version   text NOT NULL,
    action          text NOT NULL,
    bucket          smallint NOT NULL CHECK (bucket BETWEEN 1 AND 20),
    cases           bigint NOT NULL,
    PRIMARY KEY (day, detector, track, model_version, action, bucket)
);

-- A statement-level trigger sees a whole batch at once (the sink writes hundreds of cases
-- per statement, COPY too): one grouped upsert per batch. For INSERT ... ON CONFLICT DO
-- UPDATE, the new-rows table holds only the rows actually inserted, so a redelivered
-- decision is not counted twice. Rows are upserted in key order: two writers never deadlock.
-- SECURITY DEFINER: the sink's login needs no right on the rollup.
CREATE FUNCTION case_daily_count() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO case_daily AS d (day, detector, track, model_version, action, bucket, cases)
    SELECT (scored_at AT TIME ZONE 'UTC')::date, detector, track, model_version, action,
           greatest(least(width_bucket(score, 0, 1, 20), 20), 1), count(*)
    FROM new_cases
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (day, detector, track, model_version, action, bucket)
    DO UPDATE SET cases = d.cases + EXCLUDED.cases;
    RETURN NULL;
END $$;

CREATE TRIGGER cases_daily AFTER INSERT ON cases
    REFERENCING NEW TABLE AS new_cases
    FOR EACH STATEMENT EXECUTE FUNCTION case_daily_count();

-- What was written before this migration.
INSERT INTO case_daily (day, detector, track, model_version, action, bucket, cases)
SELECT (scored_at AT TIME ZONE 'UTC')::date, detector, track, model_version, action,
       greatest(least(width_bucket(score, 0, 1, 20), 20), 1), count(*)
FROM cases
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE INDEX cases_labelled ON cases (scored_at) INCLUDE (score, label, reasons, action)
    WHERE label IS NOT NULL;

GRANT SELECT ON case_daily TO fraud_console;
