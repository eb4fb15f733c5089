"""Job types used by ``jobtable demo``."""
