#!/bin/bash
# Runs once, when the postgres container initialises an empty data
# directory (/docker-entrypoint-initdb.d). Creates the demo table with some
# rows (they arrive as the snapshot), a publication for it, and `cdc`: a
# least-privilege role for the engine (see docs/operations.md, "Privileges").
# -e, not -u: the entrypoint sources this file when it is not executable.
set -eo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v cdc_password="${CDC_PASSWORD:?CDC_PASSWORD must be set}" \
    -v db="$POSTGRES_DB" <<'SQL'
CREATE TABLE public.customers (
    id         bigserial PRIMARY KEY,
    name       text        NOT NULL,
    email      text,
    balance    numeric(12, 2) NOT NULL DEFAULT 0,
    tags       text[],
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.customers (name, email, balance, tags)
SELECT 'customer ' || i, 'c' || i || '@example.com', (i % 1000) + 0.25, ARRAY['seed']
FROM generate_series(1, 5000) AS i;

-- The engine's role: may log in, stream (REPLICATION), read the captured
-- table (the snapshot), nothing else on the data.
CREATE ROLE cdc LOGIN REPLICATION PASSWORD :'cdc_password';
GRANT SELECT ON public.customers TO cdc;
-- The snapshot keeps its coordination tables in schema `cdc`, which the
-- engine creates (CREATE SCHEMA IF NOT EXISTS needs CREATE on the database,
-- at every start with snapshot.mode initial or snapshot_only).
GRANT CREATE ON DATABASE :"db" TO cdc;

-- The publication is created here by the table owner, so the engine's role
-- does not need to own the table (pipeline: publication.create: false).
CREATE PUBLICATION cdc_pub FOR TABLE public.customers;
SQL
