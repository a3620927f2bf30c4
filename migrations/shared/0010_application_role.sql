-- The application's database role (docs/security.md, "The application's database role"): the API, the
-- workers and the CLI's pool log in as `yiyang_app`; the DATABASE_URL user that runs these migrations owns
-- every schema and table. The role owns nothing, so it cannot alter, drop or disable the triggers of a
-- table, and it is granted what the application does: DML on the registry's tables, but only SELECT and
-- INSERT on the audit tables (here and in every tenant schema: migrations/tenant/0017), so that "the
-- application cannot change its audit trail" holds by privilege, not only by the append-only triggers.
--
-- Roles belong to the cluster, not to a database: the role may exist already (another database of the
-- server, a test run's scratch database, or created beforehand by an administrator with a password).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'yiyang_app') THEN
        CREATE ROLE yiyang_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by a migration of another database of the cluster
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the role yiyang_app does not exist and % may not create it', current_user
            USING HINT = 'CREATE ROLE yiyang_app LOGIN PASSWORD ''…'' NOSUPERUSER NOBYPASSRLS as an administrator,'
                         ' or run the migrations as a role with CREATEROLE';
END
$$;

-- A role created beforehand must not be more than this: a superuser or a member of the owner ignores
-- every grant below.
DO $$
BEGIN
    IF EXISTS (
        SELECT FROM pg_roles
        WHERE rolname = 'yiyang_app' AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb OR rolreplication)
    ) THEN
        RAISE EXCEPTION 'the role yiyang_app must not be a superuser nor have BYPASSRLS, CREATEROLE, CREATEDB or REPLICATION';
    END IF;
    IF pg_has_role('yiyang_app', current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'the role yiyang_app must not be (a member of) %, which owns the schemas', current_user
            USING HINT = 'run the migrations as the owner (DATABASE_URL), not as the application''s role';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA shared TO yiyang_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA shared TO yiyang_app;
-- UPDATE: the demo data and the benchmarks move identities past explicit ids (setval).
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA shared TO yiyang_app;
-- Tables and sequences that later migrations create in the shared schema (as the same owner).
ALTER DEFAULT PRIVILEGES IN SCHEMA shared GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO yiyang_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA shared GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO yiyang_app;

-- Append-only: the audit checkpoints and the sign-in audit.
REVOKE ALL ON shared.audit_checkpoint, shared.auth_event FROM yiyang_app;
GRANT SELECT, INSERT ON shared.audit_checkpoint, shared.auth_event TO yiyang_app;
-- The checkpoints' signing keys: a root-key rotation re-seals the private key, the only column that may change.
REVOKE ALL ON shared.audit_signing_key FROM yiyang_app;
GRANT SELECT, INSERT ON shared.audit_signing_key TO yiyang_app;
GRANT UPDATE (private_key_sealed) ON shared.audit_signing_key TO yiyang_app;
-- The migration ledgers are the owner's to write.
REVOKE ALL ON shared.shared_migrations, shared.tenant_migrations FROM yiyang_app;
GRANT SELECT ON shared.shared_migrations, shared.tenant_migrations TO yiyang_app;
