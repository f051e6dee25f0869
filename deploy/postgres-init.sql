-- Runs once, when the compose stack creates its Postgres volume: a read-only role for
-- Grafana, granted SELECT on every table tierlog's migrations create later.
CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana_reader';
GRANT CONNECT ON DATABASE tierlog TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE tierlog IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
