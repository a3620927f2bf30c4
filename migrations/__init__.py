"""Versioned SQL migrations: `shared/` for the shared schema, `tenant/` for every institution schema.

Files are `NNNN_name.sql`, applied in order by `tenants.migrate`. Never edit a released file; add one.
"""
