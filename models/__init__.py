"""Model training, the model registry, retraining schedules and drift checks."""
