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
