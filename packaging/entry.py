"""What the frozen ``tillbox`` executable runs: ``entrypoints.cli:main``, as the console script does.

PyInstaller needs a script file rather than an entry point; this is that file and nothing more.
"""

import multiprocessing

from entrypoints.cli import main

if __name__ == "__main__":
    # A frozen child started by multiprocessing (spawn, forkserver, its resource tracker)
    # re-executes this binary; freeze_support() makes that child run its task instead of
    # the command line. Importing multiprocessing costs about 2 ms.
    multiprocessing.freeze_support()
    main()
