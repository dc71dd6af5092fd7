"""The memory service (control plane) as a Starlette application."""
