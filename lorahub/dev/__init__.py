"""Developer tools: example files and tiny models for demos and tests, made offline from configs."""
