-- A delivery held back by a silence or a maintenance window is in state 'silenced' (beside
-- pending | sent | dead): not sent, not dead. `held_by` names what holds it (the silence's id
-- or the window's name) while the hold lasts; when the hold ends the delivery is either
-- released (back to 'pending', same alert id) or, if what it said cleared meanwhile, stays
-- 'silenced' with held_by NULL for good.
ALTER TABLE deliveries ADD COLUMN held_by TEXT;
CREATE INDEX deliveries_held ON deliveries (held_by) WHERE held_by IS NOT NULL;
-- The first silence id or window name that held one of the alert's notifications back, for
-- `recwatch alerts --json` (silenced_by).
ALTER TABLE alerts ADD COLUMN silenced_by TEXT;
