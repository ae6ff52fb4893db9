"""The HTTP surface: the Starlette app and its wiring (app), claim-request parsing (requests),
Prometheus text (metrics), body limits (body_limit), the OpenAPI document (openapi) and the
status page (ui). It builds the engine and mounts the built-in image handlers, so it may import
the shared core, queue, providers, images and ops; only the command line imports it."""
