"""Alert sinks for anomalies: the outbox, Alertmanager and Slack."""
