"""Cairn services: one folder each, all with the shape of cairn.service."""
