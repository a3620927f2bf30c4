-- Corrections of the health record (care/health_record.py): entries are changed in place (only the
-- changed columns sealed again, under the same row id) and an entry recorded in error is marked, not
-- erased: a clinical record is corrected, and what was once in it (and who took it out) stays visible to
-- an audit. Marked entries are left out of every read and cannot be changed again.
-- Runs with search_path set to the tenant schema.
-- All new columns are plain: when and by whom (an account subject) say nothing about the resident's health.
ALTER TABLE diagnosis
    ADD COLUMN updated_at timestamptz,
    ADD COLUMN updated_by varchar(200),
    ADD COLUMN entered_in_error_at timestamptz,
    ADD COLUMN entered_in_error_by varchar(200),
    ADD CONSTRAINT diagnosis_entered_in_error_check
        CHECK ((entered_in_error_at IS NULL) = (entered_in_error_by IS NULL));

ALTER TABLE medication
    ADD COLUMN updated_at timestamptz,
    ADD COLUMN updated_by varchar(200),
    ADD COLUMN entered_in_error_at timestamptz,
    ADD COLUMN entered_in_error_by varchar(200),
    ADD CONSTRAINT medication_entered_in_error_check
        CHECK ((entered_in_error_at IS NULL) = (entered_in_error_by IS NULL));

ALTER TABLE allergy
    ADD COLUMN updated_at timestamptz,
    ADD COLUMN updated_by varchar(200),
    ADD COLUMN entered_in_error_at timestamptz,
    ADD COLUMN entered_in_error_by varchar(200),
    ADD CONSTRAINT allergy_entered_in_error_check
        CHECK ((entered_in_error_at IS NULL) = (entered_in_error_by IS NULL));
