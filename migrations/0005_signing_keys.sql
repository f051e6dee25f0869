-- The deployment's checkpoint signing identity (src/integrity/identity.rs): every
-- public key whose checkpoints count, and which one is current. A node signs only
-- with the current key; the first node of a new deployment makes its key current,
-- `tierlog signing-key promote` rotates. Retired keys stay, so old checkpoints and
-- archive manifests still verify on every node.
CREATE TABLE signing_keys (
    key_id      text        PRIMARY KEY,
    public_key  text        NOT NULL,
    current     boolean     NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (current) WHERE current;

-- Background work done by one node at a time (src/cluster/lease.rs): the holder of a
-- lease renews it; when it stops (dies, or loses its link to Postgres), the lease
-- expires and another node takes it.
CREATE TABLE leases (
    name        text        PRIMARY KEY,
    holder      text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
