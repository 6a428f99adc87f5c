"""The revisions, oldest first (Alembic reads the files; nothing imports this package)."""
