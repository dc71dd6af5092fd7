"""Optional integrations with other ecosystems' libraries (each behind its own extra)."""
