"""Schemathesis hooks for `movieops contract` (loaded through SCHEMATHESIS_HOOKS).

Schemathesis imports this module when its CLI starts, before it starts any worker thread, so
this is also where the process is made safe for several workers on Python 3.11 (see
``serialise_ast_construction``).

Schemathesis reuses generated header values across different bodies; the API then correctly
answers 422 for an Idempotency-Key reused with another body, which Schemathesis would report as a
rejected valid request. Every *valid* key therefore gets a fresh value per call; invalid keys stay
as generated, so the negative tests still reach the 400 path.

The rate-limit exemption secret is not handled here: Schemathesis' own configuration
(movieops/schemathesis.toml) sends it as a configured header read from the environment
variable MOVIEOPS_CONTRACT_EXEMPT_TOKEN, and sanitizes it in its output.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import schemathesis

from app.constants import IDEMPOTENCY_KEY_PATTERN

_VALID_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

# Re-entrant: a finalizer that runs during a parse (garbage collection happens inside AST
# construction) may itself parse, on the same thread.
AST_LOCK = threading.RLock()
_LOCKED_MARK = "__movieops_ast_lock__"


def _locked(parse: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(parse)
    def locked_parse(*args: Any, **kwargs: Any) -> Any:
        with AST_LOCK:
            return parse(*args, **kwargs)

    setattr(locked_parse, _LOCKED_MARK, True)
    return locked_parse


def serialise_ast_construction(version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """On CPython < 3.12, make ``ast.parse`` hold a process-wide lock; return whether it does.

    CPython 3.11 keeps the depth counter of its AST constructor (the C code that turns a parse
    tree into ``ast`` objects, run by ``ast.parse``) in interpreter-wide state
    (CPython issue 106905). That construction allocates, allocation can run the garbage
    collector, and the collector can run Python code, which lets another thread in: if that
    thread parses too, the first one ends with ``SystemError: AST constructor recursion depth
    mismatch``. Schemathesis runs ``--workers N`` as threads, and Hypothesis parses source with
    ``ast.parse`` on them (hypothesis.internal.constants_ast collects constants from module
    sources, hypothesis.internal.lambda_sources and reflection describe lambdas and functions,
    schemathesis.python._constants.extract and the 3.11 traceback module parse too): about one
    default run in five failed with a "Runtime Error" in the coverage phase.

    Every one of those calls looks ``ast.parse`` up on the module when it runs (so does
    ``ast.literal_eval``), and nothing in them calls ``compile(..., ast.PyCF_ONLY_AST)`` directly,
    so replacing ``ast.parse`` with a locked wrapper serialises every AST construction. Parsing
    holds the GIL anyway, so the lock costs no parallelism. We keep ``--workers 2`` rather than
    dropping to one worker: the HTTP calls, where the run spends its time, stay concurrent.
    Python 3.12 and later build the tree with per-call state and are left alone.
    """
    if version >= (3, 12):
        return False
    if not getattr(ast.parse, _LOCKED_MARK, False):
        ast.parse = _locked(ast.parse)
    return True


AST_SERIALISED = serialise_ast_construction()


def fresh_idempotency_keys(headers: dict[str, Any] | None) -> None:
    """Replace every valid Idempotency-Key value with a unique one (in place)."""
    if not headers:
        return
    for name, value in list(headers.items()):
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        if _VALID_KEY.fullmatch(value):
            headers[name] = f"contract-{uuid.uuid4()}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Unique Idempotency-Key values per call."""
    fresh_idempotency_keys(case.headers)
