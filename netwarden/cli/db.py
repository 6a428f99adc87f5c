"""Commands on the store's database: ``db upgrade``, ``db current``, ``db history`` and
``db check``; :mod:`netwarden.commands.db` does the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from netwarden.cli.consoles import stdout

__all__ = ["COMMANDS", "add_parser"]

COMMANDS: Final = ("db",)


def _add_target(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the database, e.g. sqlite:///netwarden-data/service/"
        "netwarden.db or postgresql+psycopg://USER:PASSWORD@HOST:5432/netwarden "
        "(default: the store of --config, or of the embedded default)",
    )
    where.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the service's YAML configuration: its store.url (NETWARDEN_STORE__URL overrides)",
    )


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add the ``db`` command and its subcommands to ``subparsers``."""
    db = subparsers.add_parser(
        "db",
        help="upgrade the store's database and show its migrations",
        description="The store's schema is migrated with Alembic: every netwarden process "
        "upgrades the database when it opens it; these commands do it beforehand and show "
        "where a database is. SQLite and PostgreSQL alike.",
    )
    sub = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    up = sub.add_parser(
        "upgrade",
        help="upgrade the database to the newest migration (or --to REVISION)",
        description="Apply the migrations the database lacks, in one transaction. A database "
        "written before migrations is first brought to the first revision, keeping its rows.",
    )
    _add_target(up)
    up.add_argument(
        "--to",
        default="head",
        metavar="REVISION",
        help="stop at this revision (see `netwarden db history`; default: %(default)s)",
    )
    up.set_defaults(handler=_cmd_upgrade)
    cur = sub.add_parser(
        "current",
        help="show the database's migration (exit 1 when it is not the newest)",
        description="Print the revision the database is at and whether it is the newest; "
        "exit status 1 when it is behind (or was never migrated).",
    )
    _add_target(cur)
    cur.set_defaults(handler=_cmd_current)
    hist = sub.add_parser(
        "history",
        help="list the migrations, oldest first",
        description="Every migration this netwarden ships, oldest first.",
    )
    hist.set_defaults(handler=_cmd_history)
    chk = sub.add_parser(
        "check",
        help="check that the models and the migrations agree (for developers and CI)",
        description="Upgrade the database (use an empty one), then compare it with the models: "
        "exit status 1 and the differences when a model changed without a migration.",
    )
    _add_target(chk)
    chk.set_defaults(handler=_cmd_check)


def _url(args: argparse.Namespace) -> str:
    if args.url is not None:
        return str(args.url)
    from netwarden.config import ConfigError, load_config
    from netwarden.errors import UserError

    try:
        return load_config(args.config).store_url
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from netwarden.commands import db

    return db.upgrade(_url(args), args.to, stdout())


def _cmd_current(args: argparse.Namespace) -> int:
    from netwarden.commands import db

    return db.current(_url(args), stdout())


def _cmd_history(args: argparse.Namespace) -> int:
    from netwarden.commands import db

    return db.history(stdout())


def _cmd_check(args: argparse.Namespace) -> int:
    from netwarden.commands import db

    return db.check(_url(args), stdout())
