"""Cairn wire contract: events, commands, queries, subjects, stream definitions."""
