"""Alert sinks for anomalies and change announcements: the outbox, Alertmanager and Slack."""
