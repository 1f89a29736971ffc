"""Clients for a raftpy cluster: :class:`Client` (asyncio) and :class:`SyncClient` (blocking).

Both start from any list of node addresses, find the leader, follow its redirects, retry with
jittered exponential backoff under one overall deadline, and tell a *definite* failure (the
command did not happen) from an *indeterminate* one (it may have happened); the statuses and
errors behind that split are in :mod:`raftpy.outcomes`.

Connections. One TCP connection per node, opened lazily on first use and kept. The first frame
is :class:`~raftpy.transport.protocol.Hello` (role ``CLIENT``); a refused handshake makes that
node unreachable for this attempt. Requests are pipelined: any number may be outstanding on a
connection, each matched to its response by a per-connection ``id``. Requests issued in the
same event-loop iteration are written with one ``write`` call. A connection that breaks fails
its outstanding requests; a proposal that had been written counts as "sent, outcome unknown".
The node announces in its handshake how long it keeps an idle connection open; the client
stops using a connection idle for half that time and opens a new one, so a request is never
written into a connection the node is closing.

Finding the leader. A call goes first to the last known leader, else to the next address in
rotation. A ``NOT_LEADER`` answer naming the leader's address sends the next attempt there
(the address is added to the known list); without a hint the next address is tried. Moving on
to an address not yet tried is immediate; coming back to one that already failed since the
last pause (a whole round without success, a redirect loop, a leader shedding load) first
sleeps a jittered backoff: ``backoff_initial`` doubling up to ``backoff_max``, each sleep drawn
uniformly from ``[b/2, b]``. Everything happens under one deadline per call (``timeout``); each
request tells the node how much of it remains (``ClientRequest.timeout``) so the node gives up
too.

Sessions: exactly-once writes. By default (``sessions=True``) a client registers a *session*
with the cluster on its first write (Thesis §6.3) and numbers its writes; each write carries
``(session id, seq, ack)``, where ``ack`` is the lowest seq whose answer the client has not
received yet. The cluster remembers, in replicated state, the result of every write the client
has not acknowledged, so a write sent again with the same ``(session, seq)`` is answered from
that memory instead of being applied again. The client therefore *resends* a write whose
outcome became unknown (the connection broke after it was sent, the node answered
``INDETERMINATE`` because its leadership was lost, an attempt got no answer within
``attempt_timeout``), following redirects and leader changes, until an answer or the call's
deadline: the write is applied exactly once. While the client is idle it sends a keep-alive
every quarter of the session's timeout; :meth:`Client.close` closes the session (best effort,
for at most a second: one left open expires). ``sessions=False`` sends writes without a
session, and then a write whose outcome became unknown is never resent (at most once).

Outcomes of :meth:`Client.propose`:

- the result of ``StateMachine.apply`` on success;
- :class:`~raftpy.errors.ClusterUnavailableError` when the deadline passed and the command was
  never handed to a node that could have appended it (every attempt was refused, answered
  ``NOT_LEADER`` or ``DROPPED``, or never left this process; or no session could be opened).
  Definite: it did not happen. Its subclass :class:`~raftpy.errors.HandshakeRefusedError`
  comes at once, not at the deadline, when every address refused the connection for a reason
  asking again cannot change (another cluster id, a protocol version the node does not speak,
  a node certificate this client does not trust); that ends status and snapshot requests to
  one node, and reads, the same way;
- :class:`~raftpy.errors.ProposalDropped` at once when the leader refused it for a reason a
  retry cannot fix (an entry larger than the leader accepts), or when the request is larger
  than the frame limit the node announced in its handshake (then it is not even sent), or
  when the node failed opening the session the write needs. Definite;
- :class:`~raftpy.errors.SessionExpiredError` when the cluster no longer knows the session
  (idle past its timeout, evicted because the cluster holds too many sessions, closed) and no
  earlier attempt of this write may have been appended. Definite; the next write opens a new
  session;
- :class:`~raftpy.errors.IndeterminateError` when the command was written to a node and its
  fate is unknown. With a session: the deadline passed while an attempt may have been
  appended, or the session expired after such an attempt (it may have been applied before
  the session ended). Without one: also as soon as one attempt's outcome is unknown. It may
  have been applied (once), and may still be applied later;
- :class:`~raftpy.errors.RemoteProtocolError` when the node answered ``ERROR``.

Queries (:meth:`Client.query`) and :meth:`Client.status` change nothing, so they are retried on
any failure until the deadline, and one that cannot be answered in time raises
``ClusterUnavailableError``. A single read attempt waits at most ``attempt_timeout`` for its
answer before moving on to another node (so a hung node does not eat the whole deadline), and
so does an attempt of a session's write (resending it is safe); a write without a session,
and a membership change, waits for its answer until the overall deadline, since giving up
early would only turn a possible success into an unknown outcome.

Cancellation: cancelling a call abandons its request (a late answer is ignored); the
connection stays usable for the other requests on it. A cancelled proposal that had been
written may still be applied (at most once with a session).

A :class:`Client` belongs to the event loop it is first used on. :class:`SyncClient` wraps one
for code without an event loop.

The package: :mod:`~raftpy.client.connection` (one connection to one node),
:mod:`~raftpy.client.pool` (a client's connections), :mod:`~raftpy.client.targets` (known
addresses and leader), :mod:`~raftpy.client.session` (a session's numbering and ack),
:mod:`~raftpy.client.call` (one request's life: redirects, retries, resends, backoff,
deadline, definite or not), :mod:`~raftpy.client.client` (:class:`Client`) and
:mod:`~raftpy.client.sync` (:class:`SyncClient`).
"""

from __future__ import annotations

from raftpy.client.client import Client
from raftpy.client.sync import SyncClient
from raftpy.transport.address import parse_address

__all__ = ["Client", "SyncClient", "parse_address"]
