-- callsign schema, SQLite dialect. PostgreSQL has the same tables under the same version in
-- ../postgres/; keep the two in step (a unit test compares the file lists).
--
-- Conventions shared by both dialects:
-- * times are integer milliseconds since the Unix epoch, so the dialects never disagree on
--   time zones or text formats;
-- * UUIDs are 16-byte blobs here and `uuid` on PostgreSQL (sqlx binds both from uuid::Uuid);
-- * every table that holds tenant data has tenant_id first in its primary key, and every query
--   names the tenant.

-- Facts about the deployment itself, e.g. which master key sealed the secrets below.
CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Bumped in the same transaction as any change to tenants, host names, access keys or
-- signing keys. Running servers poll it to refresh their in-memory caches, so a change made
-- by the CLI (another process) reaches them within the poll interval.
CREATE TABLE change_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO change_epoch (id, epoch) VALUES (1, 0);

CREATE TABLE tenants (
    tenant_id  BLOB PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    -- The default tenant serves every host no other tenant claims; at most one.
    is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX tenants_single_default ON tenants (is_default) WHERE is_default = 1;

-- A host name belongs to at most one tenant: the primary key makes a second claim fail.
CREATE TABLE tenant_hostnames (
    hostname  TEXT PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    position  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tenant_hostnames_by_tenant ON tenant_hostnames (tenant_id);

-- HMAC keys must be readable to verify signatures, so they cannot be stored as hashes; they
-- are sealed with the deployment's master key (AES-256-GCM) instead.
CREATE TABLE access_keys (
    tenant_id  BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    slot       TEXT NOT NULL CHECK (slot IN ('primary', 'secondary')),
    sealed_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, slot)
) WITHOUT ROWID;

-- Token signing keys. The newest unretired key of a tenant signs; older ones stay to verify
-- the tokens they signed until those expire.
CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY,
    tenant_id          BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    algorithm          TEXT NOT NULL,
    sealed_private_key BLOB NOT NULL,
    public_key_der     BLOB NOT NULL,
    created_at         INTEGER NOT NULL,
    retired_at         INTEGER
) WITHOUT ROWID;
CREATE INDEX signing_keys_by_tenant ON signing_keys (tenant_id, created_at);

-- A deleted identity stays as a tombstone: its id is never reused, its tokens never verify,
-- and its personal data (external_id) is gone.
CREATE TABLE identities (
    tenant_id             BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    identity_id           BLOB NOT NULL,
    external_id           TEXT,
    created_at            INTEGER NOT NULL,
    last_token_issued_at  INTEGER,
    -- Revocation watermark: every token issued before this instant is revoked.
    tokens_revoked_before INTEGER,
    deleted_at            INTEGER,
    PRIMARY KEY (tenant_id, identity_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX identities_by_external_id ON identities (tenant_id, external_id)
    WHERE external_id IS NOT NULL;

-- One row per issued token. jti is a UUIDv7, so inserts append to the index.
CREATE TABLE issued_tokens (
    tenant_id   BLOB NOT NULL,
    jti         BLOB NOT NULL,
    identity_id BLOB NOT NULL,
    scopes      TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, jti),
    FOREIGN KEY (tenant_id, identity_id) REFERENCES identities (tenant_id, identity_id)
        ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX issued_tokens_by_identity ON issued_tokens (tenant_id, identity_id, issued_at);
