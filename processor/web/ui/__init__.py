"""The status page at /ui: server-rendered pages over the queue (pages) and the signed,
revocable sign-in session (session). Part of processor.web; it imports the shared core, the
storage client and ops.schedule (for the cron job's name)."""
