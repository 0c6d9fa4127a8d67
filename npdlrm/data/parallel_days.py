"""Run one task per day file on several processes: MPI ranks, or local worker processes.

The days of Criteo Terabyte are independent in the dictionary pass (each gives a
partial dictionary, merged afterwards in day order) and in the write pass (each gives
its part file). `map_days(fn, args)` runs fn(*a) for every a and returns the results
in order:
  - on an MPI communicator of size > 1, rank r runs tasks r, r + size, ... and every
    rank gets every result (the files must be on a filesystem all ranks see);
  - else with workers > 1, on that many spawned local processes (spawn, not fork:
    Numba's OpenMP threads do not survive a fork), each parsing with one thread;
  - else here, one after the other.
A failed task raises its exception here (the first in task order), after the others
of its round ended. fn must be a module-level function and its arguments picklable.
"""
import concurrent.futures as cf
import multiprocessing


def _init_worker():
    """Each local worker parses with one thread: the workers share the cores."""
    import numba
    numba.set_num_threads(1)


def _call(fn, args):
    try:
        return True, fn(*args)
    except Exception as e:  # carried to the caller, raised there
        return False, e


def map_days(fn, args_list, workers=1, comm=None, on_done=None):
    """[fn(*args) for args in args_list], run as the module doc says.

    on_done: optional callable(index, result) called here as each task ends (local
    workers and in-process runs only)."""
    args_list = [tuple(a) for a in args_list]
    if comm is not None and comm.size > 1:
        mine = {i: _call(fn, args_list[i]) for i in range(comm.rank, len(args_list), comm.size)}
        gathered = {}
        for part in comm.allgather_obj(mine):
            gathered.update(part)
        return _results([gathered[i] for i in range(len(args_list))])
    workers = max(1, min(int(workers), len(args_list)))
    if workers == 1:
        results = []
        for i, a in enumerate(args_list):
            results.append(fn(*a))
            if on_done is not None:
                on_done(i, results[-1])
        return results
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        futures = [pool.submit(_call, fn, a) for a in args_list]
        try:
            for i, fut in enumerate(futures):
                ok, value = fut.result()
                if not ok:
                    raise value
                if on_done is not None:
                    on_done(i, value)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        return [fut.result()[1] for fut in futures]


def _results(pairs):
    for ok, value in pairs:
        if not ok:
            raise value
    return [value for _, value in pairs]
