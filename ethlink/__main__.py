"""The `ethlink` command (its console script) and `python -m ethlink`: ethlink.cli's
command line, imported with the garbage collector paused.

NOTE: the imports of a start (numpy, click, ethlink's modules: about 70 ms) leave some
40 000 objects the collector tracks, nearly all living as long as the process; while
they were made it ran about 50 collections over them for nothing (about 5 ms of the
127:1 incast's run, measured with gc.callbacks). Paused for the imports, then frozen
(gc.freeze: later collections skip them); collection runs as usual afterwards.

NOTE: OPENBLAS_NUM_THREADS is 1 unless the environment sets it. numpy's OpenBLAS starts
a worker per core when numpy loads, and each spins waiting for work for about a tenth
of a second: nothing of ethlink calls BLAS, and the spinning took a core from the
engine and the pyarrow import (perf: 9 % of the 127:1 incast's samples in
blas_thread_server; process 0.24 -> 0.19 s, CPU 0.24 -> 0.18 s). Child processes
(sweep's workers) inherit it.

NOTE: ARROW_DEFAULT_MEMORY_POOL is "system" (malloc) unless the environment sets it.
pyarrow's default, mimalloc, backs its first allocations with fresh huge pages the kernel
zeroes: perf put 38 % of the RoCE permutation's write phase (the three Parquet tables,
under 1 MB of Arrow memory) in mimalloc's page faults. With malloc that phase took 0.049
to 0.057 s against 0.075 to 0.092 s, a traced 127:1 incast was no slower and used 13 MB
less (benchmarks/README.md, "Start-up ..., session 10"). Only the command sets it: the
Python API leaves a caller's process as it is.
"""
import gc
import os


def main() -> None:
    """Import the command line, then run it (ethlink.cli.entry)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    gc.disable()
    try:
        from . import cli
    finally:
        gc.freeze()
        gc.enable()
    cli.entry()


if __name__ == "__main__":
    main()
