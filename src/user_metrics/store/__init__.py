"""The DuckDB file: the tables and their upgrades, the one writer thread (each span once, group
commit, rollups in the same transaction) and the reader cursors it lends. It imports no other
stage: what it stores arrives as ``records.py`` rows and Arrow tables."""
