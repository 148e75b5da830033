"""Shared test helpers: test agents, bounded waits, subprocesses."""
