-- The X-request-Id of the answer that showed each transition: what the provider's support
-- asks for when a recording stopped and nobody knows why. NULL for transitions written before
-- this column existed, or when the API sent none.
ALTER TABLE transitions ADD COLUMN request_id TEXT;
