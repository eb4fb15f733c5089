"""Not a job type: its name starts with an underscore."""

GREETING = "hello"
