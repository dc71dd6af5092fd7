"""Optional integrations on other ecosystems' own libraries, each behind a pyproject extra."""
