"""A job with no Data and no annotations."""


def run(params):
    return "done"
