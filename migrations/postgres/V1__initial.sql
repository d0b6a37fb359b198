-- callsign schema, PostgreSQL dialect. SQLite has the same tables under the same version in
-- ../sqlite/; keep the two in step (a unit test compares the file lists).
--
-- Conventions shared by both dialects:
-- * times are integer milliseconds since the Unix epoch (int8), so the dialects never
--   disagree on time zones or text formats;
-- * UUIDs are `uuid` here and 16-byte blobs on SQLite (sqlx binds both from uuid::Uuid);
-- * every table that holds tenant data has tenant_id first in its primary key, and every query
--   names the tenant.

-- Facts about the deployment itself, e.g. which master key sealed the secrets below.
CREATE TABLE server_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Bumped in the same transaction as any change to tenants, host names, access keys or
-- signing keys. Running servers poll it to refresh their in-memory caches, so a change made
-- by the CLI or by another instance reaches them within the poll interval.
CREATE TABLE change_epoch (
    id    int4 PRIMARY KEY CHECK (id = 1),
    epoch int8 NOT NULL
);
INSERT INTO change_epoch (id, epoch) VALUES (1, 0);

CREATE TABLE tenants (
    tenant_id  uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    -- The default tenant serves every host no other tenant claims; at most one.
    is_default boolean NOT NULL DEFAULT false,
    created_at int8 NOT NULL
);
CREATE UNIQUE INDEX tenants_single_default ON tenants (is_default) WHERE is_default;

-- A host name belongs to at most one tenant: the primary key makes a second claim fail.
CREATE TABLE tenant_hostnames (
    hostname  text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    position  int4 NOT NULL
);
CREATE INDEX tenant_hostnames_by_tenant ON tenant_hostnames (tenant_id);

-- HMAC keys must be readable to verify signatures, so they cannot be stored as hashes; they
-- are sealed with the deployment's master key (AES-256-GCM) instead.
CREATE TABLE access_keys (
    tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    slot       text NOT NULL CHECK (slot IN ('primary', 'secondary')),
    sealed_key bytea NOT NULL,
    created_at int8 NOT NULL,
    PRIMARY KEY (tenant_id, slot)
);

-- Token signing keys. The newest unretired key of a tenant signs; older ones stay to verify
-- the tokens they signed until those expire.
CREATE TABLE signing_keys (
    kid                text PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    algorithm          text NOT NULL,
    sealed_private_key bytea NOT NULL,
    public_key_der     bytea NOT NULL,
    created_at         int8 NOT NULL,
    retired_at         int8
);
CREATE INDEX signing_keys_by_tenant ON signing_keys (tenant_id, created_at);

-- A deleted identity stays as a tombstone: its id is never reused, its tokens never verify,
-- and its personal data (external_id) is gone.
CREATE TABLE identities (
    tenant_id             uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    identity_id           uuid NOT NULL,
    external_id           text,
    created_at            int8 NOT NULL,
    last_token_issued_at  int8,
    -- Revocation watermark: every token issued before this instant is revoked.
    tokens_revoked_before int8,
    deleted_at            int8,
    PRIMARY KEY (tenant_id, identity_id)
);
CREATE UNIQUE INDEX identities_by_external_id ON identities (tenant_id, external_id)
    WHERE external_id IS NOT NULL;

-- One row per issued token. jti is a UUIDv7, so inserts append to the index.
CREATE TABLE issued_tokens (
    tenant_id   uuid NOT NULL,
    jti         uuid NOT NULL,
    identity_id uuid NOT NULL,
    scopes      text NOT NULL,
    issued_at   int8 NOT NULL,
    expires_at  int8 NOT NULL,
    PRIMARY KEY (tenant_id, jti),
    FOREIGN KEY (tenant_id, identity_id) REFERENCES identities (tenant_id, identity_id)
        ON DELETE CASCADE
);
CREATE INDEX issued_tokens_by_identity ON issued_tokens (tenant_id, identity_id, issued_at);
