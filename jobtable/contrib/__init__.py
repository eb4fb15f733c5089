"""Integrations with frameworks (``jobtable.contrib.django``)."""
