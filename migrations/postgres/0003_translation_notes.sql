-- Translation notes: what a cross-dialect request could not carry over (JSON array of strings).
ALTER TABLE request_log ADD COLUMN translation_notes TEXT NULL;
