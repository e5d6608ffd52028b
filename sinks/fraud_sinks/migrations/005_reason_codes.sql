-- An alert's reason codes (the scorer's `why`: each matching rule with the values it read),
-- kept with its case so an analyst sees why it was raised.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS why jsonb;
-- The writer may update it like the rest of a decision (003 grants column by column).
GRANT UPDATE (why) ON cases TO fraud_case_writer;
