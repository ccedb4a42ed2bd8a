"""App configs: schema (the YAML contract), loader with file:line:col errors, lint, hosts."""
