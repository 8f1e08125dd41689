"""Subcommands that land with later features (kept apart so `saxlevel phantom` stays light)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register further subcommands on the `saxlevel` parser."""
