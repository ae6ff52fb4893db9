"""The engine: claiming due jobs (claim), draining after a wake-up (drain), waking on inserts
(listen), running each claimed job against its handler over HTTP (dispatch, handler_client),
judging the answer (verdict), recording outcomes and lease extensions in batches (recorder),
sending back jobs whose lease ran out (rescue), pickup and run-time histograms (timings), and
the engine's SQL calls (jobs). It knows nothing of images, providers, the web app or the command
line: it may import only the shared core (processor.db, errors, settings, signing, redact, sql,
tracing)."""
