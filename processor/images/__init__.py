"""The built-in product: listing images and A+ content. The handlers (image, pack, aplus, on
the shared plumbing in common), their payload rules (payload), image work (imaging) and
guarded fetches of source photos (fetch), served as the routes in handlers. It talks to the
engine only through the handler-call contract and the lease-fenced SQL calls, so it may import
the shared core and providers, never processor.queue or processor.web."""
