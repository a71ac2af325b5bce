"""CLI command groups; `corral.cli` wires them into one typer app."""
