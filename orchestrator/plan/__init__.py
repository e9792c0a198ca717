"""Plans: the YAML schema, its checks and messages, and the expansion into trials."""
