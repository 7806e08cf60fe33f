-- A webhook hint that arrives while a worker holds the job (its poll may already have read the
-- provider's older state) is remembered here, and the job is due again at that time when the
-- worker gives it back, instead of the hint being overwritten by the worker's next_run_at.
-- A claim clears it: the claim itself answers every earlier hint.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS woken_at TIMESTAMPTZ;
