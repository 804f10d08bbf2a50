"""The machinery a cell's computation shares: seeding, memory-bounded chunks, forward
precision, eval mode, the one inference pass and the explain-once map cache. Everything here
belongs to a cell's source identity, so only code that changes numbers lives here."""
