"""Delivery: how recorded evaluation points reach a store or a predwatch server, never lost.

Spool first (fsync'ed files on disk), then a background worker delivers to a destination.
"""
