"""Entry point of an isolated child process (``python -m jobtable.worker._child``).

A module of its own that nothing imports, so that running it as ``__main__`` never
meets an already imported copy of itself (runpy's RuntimeWarning).
"""

from jobtable.worker.isolated import main

if __name__ == "__main__":
    main()
