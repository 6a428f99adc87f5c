"""Storage shared by anomalies, proposals and the alert outbox: engine, sessions, types."""
