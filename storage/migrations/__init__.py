"""netwarden's Alembic migrations: ``env.py`` (runs on the connection
:mod:`netwarden.storage.migrate` passes), ``script.py.mako`` (the template of a new revision),
``versions/`` (the revisions, ``0001`` first), :mod:`.baseline` (the schema of ``0001``) and
:mod:`.legacy` (how a database written before migrations is brought to that schema)."""
