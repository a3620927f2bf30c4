-- The application's database role in the tenant schema (migrations/shared/0010 creates it; docs/security.md,
-- "The application's database role"). Applied to every existing schema and, as part of the full set, to
-- every schema provisioned later; the default privileges cover the tables of later migrations.
-- The application reads and writes the care record but only appends to audit_event.
DO $$
DECLARE
    tenant_schema text := current_schema();  -- the tenant's: the migration's search_path starts with it
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO yiyang_app', tenant_schema);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO yiyang_app', tenant_schema);
    -- UPDATE: the demo data and the benchmarks move identities past explicit ids (setval).
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO yiyang_app', tenant_schema);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO yiyang_app',
        tenant_schema
    );
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO yiyang_app',
        tenant_schema
    );
END
$$;

REVOKE ALL ON audit_event FROM yiyang_app;
GRANT SELECT, INSERT ON audit_event TO yiyang_app;
