"""The record: peewee models, the database URL, and the batching writer thread.

SQLite (WAL) is the zero-setup default; any peewee URL (``postgresql://...``) works the same way.
"""
