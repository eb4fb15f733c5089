"""Job types of the codegen fixture."""
