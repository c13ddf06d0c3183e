"""Chart tier: Helm chart render, schema validation, Dockerfile checks."""
