-- Nothing changes on SQLite: PostgreSQL's V5 drops the foreign key from token records to
-- identities and the by-identity index. Here the key check is one primary-key lookup, and
-- without the index the cascade (tenant deletion) would scan every tenant's records for each
-- identity it removes. The version exists so both dialects stay numbered alike.
SELECT 1;
