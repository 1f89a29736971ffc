"""Whether a leader should make a membership change now: the checks an operator may override.

:mod:`raftpy.core.confchange` says whether a change is *valid*; these say whether it is *wise*,
judged from what the leader knows of its followers. A change that fails one is refused with a
:class:`~raftpy.errors.ConfChangeError` saying why, unless the caller forces it
(``Raft.propose_conf_change(..., force=True)``): the operator may know better, for instance
that a silent voter is about to come back.

- **Caught up** (Thesis §4.2.1): a server that becomes a voter should already hold (nearly) the
  whole log. Otherwise every commit waits for it while it copies the log, and if it is needed
  for a majority, the cluster stops taking writes for that long.
- **Reachable** (Thesis §4.2): the new configuration must still have a majority of voters the
  leader heard from lately, or no further entry could commit: not even the change that undoes
  this one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from raftpy.core.messages import ConfState
from raftpy.core.progress import Progress
from raftpy.core.quorum import JointConfig
from raftpy.errors import ConfChangeError


def check_caught_up(
    old: ConfState,
    new: ConfState,
    progress: Mapping[int, Progress],
    last_index: int,
    max_lag: int,
) -> None:
    """Raise unless every server that becomes a voter in ``new`` holds the log up to within
    ``max_lag`` entries of ``last_index`` (a server unknown to the leader holds nothing)."""
    before = set(old.voters) | set(old.voters_outgoing)
    for node in new.voters:
        if node in before:
            continue
        pr = progress.get(node)
        match = pr.match if pr is not None else 0
        lag = last_index - match
        if lag > max_lag:
            raise ConfChangeError(
                f"node {node} is {lag} entries behind the leader (more than {max_lag}): a "
                "voter that lags stalls every commit while it catches up (Thesis §4.2.1); add "
                "it as a learner and promote it once caught up, or force the change"
            )


def check_reachable(new: ConfState, reachable: Collection[int]) -> None:
    """Raise unless the voters in ``reachable`` form a majority of ``new`` (of each half of a
    joint configuration)."""
    joint = JointConfig(frozenset(new.voters), frozenset(new.voters_outgoing))
    if joint.has_quorum(reachable):
        return
    voters = sorted(joint.voters())
    heard = sorted(set(voters) & set(reachable))
    raise ConfChangeError(
        f"after this change the leader would have heard lately from voters {heard} of "
        f"{voters}, not a majority: nothing could commit, not even a change undoing this "
        "one; bring the missing voters back first, or force the change"
    )
