"""The PostgreSQL database that bench/e2e.py and bench/web.py seed once and reuse."""

from __future__ import annotations

import argparse


def database_create(args: argparse.Namespace) -> None:
    """Create args.database on args.postgres if it is missing; with args.fresh, drop it first."""
    import psycopg

    with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database]).fetchone()
        if exists and args.fresh:
            connection.execute(f'DROP DATABASE "{args.database}" WITH (FORCE)')
            exists = None
        if not exists:
            connection.execute(f'CREATE DATABASE "{args.database}"')
