"""Flow schema, sources and readers, identity resolution, event-time windows and features."""
