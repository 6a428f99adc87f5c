"""The HTTP API: app factory, dependencies, problems, schemas and one router per resource."""
