"""Built-in job types, registered in every jobs folder."""
