"""A benchmark run in small parts: its configuration, validation and resolution, cell
identities and staleness, planning, execution (cells, parts, joins) and finishing."""
