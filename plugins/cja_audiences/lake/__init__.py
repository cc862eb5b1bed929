"""The lake (DESIGN §3): its layout and atomic writes, its schemas, and freshness checks."""
