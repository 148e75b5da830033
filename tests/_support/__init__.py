"""Shared test support: agents, waits, subprocesses, and the loopback servers the tests start themselves."""
