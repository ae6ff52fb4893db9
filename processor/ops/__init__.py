"""Running the processor's database: migrations (migrate), the pg_cron and pg_net trigger path
(schedule), retention (retention), the end-to-end check (verify), the local pg_net stand-in
(relay), and the private development cluster (pgcluster, devstack). It may import the shared
core and providers (retention deletes stored files through the storage client); the web app
and the command line import it."""
