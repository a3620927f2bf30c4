-- The floor of a resident's placement (building, floor, room, bed): care is organised by floor (a nurse
-- station and a shift lead per floor), and room numbers do not always say it. Plaintext like the rest of
-- the placement: filtered and counted in SQL (docs/security.md, "Residents and family members").
ALTER TABLE resident ADD COLUMN floor varchar(20) CHECK (floor IS NULL OR length(btrim(floor)) > 0);
CREATE INDEX resident_floor_idx ON resident (building, floor) WHERE floor IS NOT NULL;
