"""The status page at /ui."""
