"""cbd_client: the Python client of cbd, the host-wide circuit-breaker daemon.

    from cbd_client import Client

    cbd = Client()                       # $CBD_SOCKET, $XDG_RUNTIME_DIR/cbd/cbd.sock, /run/cbd/cbd.sock
    with cbd.breaker("payments"):        # CircuitOpen when the circuit denies the call
        charge()

Client(mirror=True) decides most breaker calls in the process (see
cbd_client.mirror). Client is thread-safe (one pipelined connection shared
by all threads);
AsyncClient has the same methods as coroutines. Replies are dicts with the
wire's field names (docs/PROTOCOL.md), described by cbd_client.types.
"""
from .aio import AsyncClient, AsyncWatch
from .breaker import AsyncBreaker, Breaker
from .client import Client, Watch
from .errors import CbdError, CircuitOpen, Unavailable, is_unavailable

__version__ = "0.1.0"
# The protocol version this client was written against (mirror mode needs
# 9: the watch of a key set and reportBatch; without them it turns itself off).
PROTOCOL = 9

__all__ = [
    "PROTOCOL",
    "AsyncBreaker",
    "AsyncClient",
    "AsyncWatch",
    "Breaker",
    "CbdError",
    "CircuitOpen",
    "Client",
    "Unavailable",
    "Watch",
    "is_unavailable",
]
