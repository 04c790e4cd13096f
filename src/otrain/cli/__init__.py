"""Command-line layer: argument parsing only; every command calls the documented Python API."""
