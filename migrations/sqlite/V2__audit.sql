-- The audit log: every identity and token event, tenant change and failed authentication,
-- written in the same transaction as the change it describes. See src/domain/audit.rs for
-- the hash chain. There is no foreign key to tenants on purpose: a tenant's trail outlives
-- the tenant, until its retention purges it.

CREATE TABLE audit_events (
    tenant_id         BLOB NOT NULL,
    seq               INTEGER NOT NULL,
    occurred_at       INTEGER NOT NULL,
    actor             TEXT NOT NULL,
    operation         TEXT NOT NULL,
    identity_id       BLOB,
    outcome           TEXT NOT NULL,
    client_request_id TEXT,
    request_id        TEXT,
    source_address    TEXT,
    user_agent        TEXT,
    details           TEXT NOT NULL,
    prev_hash         BLOB NOT NULL,
    hash              BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
-- One identity's events, in order: the query the API and operators run most.
CREATE INDEX audit_events_by_identity ON audit_events (tenant_id, identity_id, seq)
    WHERE identity_id IS NOT NULL;
-- Time ranges (exports, "last week") and retention purges.
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, occurred_at);

-- The end of each tenant's chain, locked by every transaction that appends to it, and the
-- anchor where the chain starts after old events were purged.
CREATE TABLE audit_chains (
    tenant_id   BLOB PRIMARY KEY,
    last_seq    INTEGER NOT NULL,
    last_hash   BLOB NOT NULL,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash BLOB NOT NULL
) WITHOUT ROWID;
INSERT INTO audit_chains (tenant_id, last_seq, last_hash, anchor_seq, anchor_hash)
    SELECT tenant_id, 0, zeroblob(32), 0, zeroblob(32) FROM tenants;

-- Days of audit events a tenant keeps; NULL keeps them forever.
ALTER TABLE tenants ADD COLUMN audit_retention_days INTEGER;

-- The stable, documented view for direct SQL (sqlite3). Same columns as on PostgreSQL.
CREATE VIEW audit_log AS
SELECT
    lower(substr(hex(e.tenant_id), 1, 8) || '-' || substr(hex(e.tenant_id), 9, 4) || '-' ||
          substr(hex(e.tenant_id), 13, 4) || '-' || substr(hex(e.tenant_id), 17, 4) || '-' ||
          substr(hex(e.tenant_id), 21, 12)) AS tenant_id,
    t.name AS tenant_name,
    e.seq AS seq,
    strftime('%Y-%m-%dT%H:%M:%fZ', e.occurred_at / 1000.0, 'unixepoch') AS occurred_at,
    e.actor AS actor,
    e.operation AS operation,
    CASE WHEN e.identity_id IS NULL THEN NULL ELSE
        '8:acs:' ||
        lower(substr(hex(e.tenant_id), 1, 8) || '-' || substr(hex(e.tenant_id), 9, 4) || '-' ||
              substr(hex(e.tenant_id), 13, 4) || '-' || substr(hex(e.tenant_id), 17, 4) || '-' ||
              substr(hex(e.tenant_id), 21, 12)) || '_' ||
        lower(substr(hex(e.identity_id), 1, 8) || '-' || substr(hex(e.identity_id), 9, 4) || '-' ||
              substr(hex(e.identity_id), 13, 4) || '-' || substr(hex(e.identity_id), 17, 4) || '-' ||
              substr(hex(e.identity_id), 21, 12))
    END AS identity,
    e.outcome AS outcome,
    e.client_request_id AS client_request_id,
    e.request_id AS request_id,
    e.source_address AS source_address,
    e.user_agent AS user_agent,
    e.details AS details,
    e.occurred_at AS occurred_at_ms
FROM audit_events e LEFT JOIN tenants t ON t.tenant_id = e.tenant_id;
