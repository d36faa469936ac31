"""OCI registries: references, the distribution API on httpx, and adapters as CNCF ModelPack artifacts."""
