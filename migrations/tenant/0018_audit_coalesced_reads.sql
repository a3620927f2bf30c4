-- A request's reads of one resident are one audit event (compliance/audit/events.py coalesced_reads):
-- its `action` lists the read actions joined by commas (`health_record.view,resident.view,vitals.view`),
-- longer than one action's 100 characters. Only the limit changes; rows and their hashes stay as they are.
ALTER TABLE audit_event DROP CONSTRAINT audit_event_action_check;
ALTER TABLE audit_event ADD CONSTRAINT audit_event_action_check CHECK (length(action) BETWEEN 1 AND 1000);
