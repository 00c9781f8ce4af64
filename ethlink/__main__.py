"""The `ethlink` command (its console script) and `python -m ethlink`: ethlink.cli's
command line, imported with the garbage collector paused.

NOTE: the imports of a start (numpy, click, ethlink's modules: about 70 ms) leave some
40 000 objects the collector tracks, nearly all living as long as the process; while
they were made it ran about 50 collections over them for nothing (about 5 ms of the
127:1 incast's run, measured with gc.callbacks). Paused for the imports, then frozen
(gc.freeze: later collections skip them); collection runs as usual afterwards.
"""
import gc


def main() -> None:
    """Import the command line, then run it (ethlink.cli.entry)."""
    gc.disable()
    try:
        from . import cli
    finally:
        gc.freeze()
        gc.enable()
    cli.entry()


if __name__ == "__main__":
    main()
