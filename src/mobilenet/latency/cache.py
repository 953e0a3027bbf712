"""Calibrations kept between runs: ``<cache>/latency-calibrations.json``, one entry per key.

A key names everything the constants depend on, as ``auto``'s decisions do: the CPU (model, ISA
flags, logical cores), the runtime and the versions of what builds and runs its probes, the
precision, the threads, the batch size (1 for runtimes that run a batch image by image), the
model's version, the timing method, and for PyTorch the OpenMP wait policy
(``allocator.openmp_wait_policy``). A new CPU, an upgraded runtime or a changed model measures
again; writing drops the entries of an older model, which nothing can read any more. An entry that
does not read back as a calibration, or a file that is not JSON, is said so on stderr and measured
again: never trusted, never an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mobilenet.allocator import openmp_wait_policy
from mobilenet.cpu import cpu_info
from mobilenet.deploy.optional import package_version
from mobilenet.deploy.timing import PACED_METHOD
from mobilenet.files import write_text
from mobilenet.latency.backends import BACKENDS
from mobilenet.latency.calibrate import Log, calibrate, calibration_warnings, check_request, log_to_stderr
from mobilenet.latency.model import MODEL_VERSION, Calibration, CorruptCalibration

CACHE_FILE = "latency-calibrations.json"

Measure = Callable[..., Calibration]  # calibrate's signature


def cache_path() -> os.PathLike[str]:
    from mobilenet.weights import cache_dir  # noqa: PLC0415 - the project's one cache folder

    return cache_dir() / CACHE_FILE


def calibration_key(runtime: str, precision: str, batch_size: int = 1, threads: int | None = None) -> dict[str, Any]:
    """What a calibration of ``runtime`` depends on (see the module docstring)."""
    backend = BACKENDS[runtime]
    return {
        **cpu_info().identity(), "runtime": runtime,
        "path": backend.current_path(),
        "versions": {name: package_version(name) for name in backend.distributions},
        "precision": precision, "threads": threads, "batch_size": 1 if backend.fixed_batch else batch_size,
        "model_version": MODEL_VERSION,
        # (its probes on one thread pool in a process of their own, where theirs would slow each
        # other: one measured beside its neighbours' pools is measured again)
        "timing": PACED_METHOD + (", one thread pool" if backend.pools_of_their_own(threads) else ""),
        **({"omp_wait_policy": openmp_wait_policy()} if backend.openmp else {}),
    }


def cached_calibration(
    runtime: str, precision: str = "fp32", *, batch_size: int = 1, threads: int | None = None,
    log: Log | None = None,
) -> Calibration | None:
    """The cached calibration for this request, or None where there is none (or only a damaged
    one, said on ``log``): never measures."""
    log = log or log_to_stderr
    check_request(runtime, precision, batch_size, threads)
    key = calibration_key(runtime, precision, batch_size, threads)
    entry = _read(log).get(json.dumps(key, sort_keys=True))
    if entry is None:
        return None
    try:
        calibration = Calibration.from_dict(entry)
        if calibration.key != key:
            raise CorruptCalibration("its key does not match its place in the cache")
        return calibration
    except CorruptCalibration as err:
        log(f"latency: the cached calibration of {runtime} {precision} is damaged ({err}); measuring again")
        return None


_WARNED: set[str] = set()  # the keys of the cached calibrations this process has said its warnings of


def calibrated(
    runtime: str, precision: str = "fp32", *, batch_size: int = 1, threads: int | None = None,
    remeasure: bool = False, log: Log | None = None, measure: Measure = calibrate,
) -> Calibration:
    """The cached calibration for this request, or a new one measured (``measure``, default
    ``calibrate``) and cached. ``remeasure``: measure again and replace it."""
    log = log or log_to_stderr
    check_request(runtime, precision, batch_size, threads)
    found = None if remeasure else cached_calibration(runtime, precision, batch_size=batch_size, threads=threads,
                                                      log=log)
    if found is not None:
        # Said when it was measured, and again in each process that uses it (once: bench asks per cell).
        said = json.dumps(found.key, sort_keys=True)
        if said not in _WARNED:
            _WARNED.add(said)
            for warning in calibration_warnings(found, cpu_info().logical_cores):
                log(warning)
        return found
    key = calibration_key(runtime, precision, batch_size, threads)
    calibration = replace(measure(runtime, precision, batch_size=batch_size, threads=threads, log=log), key=key)
    _WARNED.add(json.dumps(key, sort_keys=True))  # (``calibrate`` has said what there was to say)
    entries = _superseded_dropped(_read(lambda line: None))  # again: another process may have cached others
    entries[json.dumps(key, sort_keys=True)] = calibration.to_dict()
    try:
        write_text(cache_path(), json.dumps(entries, indent=1, sort_keys=True))
    except Exception as err:  # a read-only cache costs a calibration next time, nothing more
        log(f"latency: could not cache the calibration ({err})")
    return calibration


def _superseded_dropped(entries: dict[str, Any]) -> dict[str, Any]:
    """``entries`` less those made for an older ``MODEL_VERSION``: no version of the project
    from this one on can read them, and every model change would otherwise leave a full set
    behind. (A newer version's entries stay, for whoever runs it again.)"""
    def version(key: str) -> int:
        try:
            found = json.loads(key).get("model_version")
        except (ValueError, AttributeError):
            return -1  # not a key at all: damage, said when it was read
        return found if isinstance(found, int) else -1

    return {key: entry for key, entry in entries.items() if version(key) >= MODEL_VERSION}


def _read(log: Log) -> dict[str, Any]:
    path = cache_path()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log(f"latency: the calibration cache {path} is damaged ({type(err).__name__}); measuring again")
        return {}
    if not isinstance(data, dict):
        log(f"latency: the calibration cache {path} is damaged (not a JSON object); measuring again")
        return {}
    return data
