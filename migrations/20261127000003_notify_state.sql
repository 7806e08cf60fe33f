-- Change notices carry the changed job's state, so that a server can show a change to its
-- WebSocket subscribers without reading the job back (one query less per change; a commit that
-- changes a thousand jobs no longer costs a thousand-row read on every server).
--
-- Every committed insert or version change now notifies two channels in the writing transaction:
--   `sora_job_states`  (this release listens here): a JSON object with `id`, `version`, `owner`,
--                      `status`, `progress`, `error_code`, `error_message`, `video` (the video is
--                      stored and not purged) and `thumbnail`; only `id` and `version` when the
--                      whole would not fit a notification (8,000 bytes; a very long error
--                      message), and the server then reads the job;
--   `sora_job_changes` (`job_id:version`, as before): for servers of the previous release while a
--                      rolling upgrade runs. A later release drops it.
CREATE OR REPLACE FUNCTION sora_notify_job_change() RETURNS trigger AS $$
DECLARE
    files BOOLEAN := NEW.artifacts IS NOT NULL AND NEW.purged_at IS NULL;
    state TEXT;
BEGIN
    PERFORM pg_notify('sora_job_changes', NEW.id || ':' || NEW.version);
    state := json_build_object(
        'id', NEW.id,
        'version', NEW.version,
        'owner', NEW.owner,
        'status', NEW.status,
        'progress', NEW.progress,
        'error_code', NEW.error_code,
        'error_message', NEW.error_message,
        'video', files,
        'thumbnail', files AND COALESCE(jsonb_typeof(NEW.artifacts -> 'thumbnail') = 'object', false)
    )::text;
    IF octet_length(state) > 7900 THEN
        state := json_build_object('id', NEW.id, 'version', NEW.version)::text;
    END IF;
    PERFORM pg_notify('sora_job_states', state);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
