"""The settings of one run of the harness: :class:`JepsenConfig`.

Each setting is stated once, here: its name, type and default are the dataclass field's, and a
setting that ``raftpy jepsen`` offers on its command line carries an :class:`Option` (its help
and what the type alone does not say) in the field's metadata. The command line is built from
these fields (see :mod:`raftpy.cli.jepsen`), so an option cannot drift from the setting it sets.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeAlias, get_args

from raftpy.testing.jepsen.nemesis import NEMESES

__all__ = [
    "OPTION",
    "SNAPSHOT_ENTRIES_FLAG",
    "UNSAFE_STALE_READS_ENV",
    "ClientRouting",
    "JepsenConfig",
    "Option",
    "ReadConsistency",
    "WorkloadKind",
    "option_flag",
    "options_line",
    "replay_command",
]

UNSAFE_STALE_READS_ENV: Final = "RAFTPY_UNSAFE_STALE_READS"
"""Set to ``1`` in a server's environment: a node that believes it leads answers linearizable
reads without confirming leadership (TEST ONLY; ``JepsenConfig.unsafe_stale_reads``)."""

ReadConsistency: TypeAlias = Literal["linearizable", "lease", "stale"]
ClientRouting: TypeAlias = Literal["home", "direct"]
WorkloadKind: TypeAlias = Literal["register", "set"]

OPTION: Final = "raftpy.cli"
"""The key of a field's :class:`Option` in its metadata."""


@dataclass(frozen=True)
class Option:
    """How a :class:`JepsenConfig` field appears on the command line (``raftpy jepsen``).

    The option is ``--`` and the field's name with dashes (``flag`` overrides it); its type,
    choices (for a ``Literal``) and default come from the field. ``help`` says what it does
    (``--help`` adds the default, or ``default_text`` when the default is not a value to show).
    ``minimum``: the smallest number the command line accepts, checked when it is parsed
    (:meth:`JepsenConfig.validate` still checks every setting). ``choices``: the accepted
    values of a plain ``str`` field.
    """

    help: str
    metavar: str | None = None
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    default_text: str | None = None


def _cli(
    help: str,
    *,
    metavar: str | None = None,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    default_text: str | None = None,
) -> Mapping[str, Option]:
    """A field's metadata that puts it on the command line."""
    return {OPTION: Option(help, metavar, minimum, choices, flag, default_text)}


@dataclass(frozen=True)
class JepsenConfig:
    """One run of :func:`~raftpy.testing.jepsen.run.run_jepsen`.

    Faults alternate with quiet periods: quiet for ``interval`` seconds, a fault for
    ``interval`` seconds (each drawn from 0.5x to 1.5x), and so on until ``seconds`` have
    passed. The settings with an :class:`Option` are described by its help; the others:
    ``read_fraction``: the share of reads (the rest is half writes, half cas); values are
    integers ``0 .. values - 1``. ``server_env``: extra environment for the servers;
    ``server_args``: extra options for their ``server`` command (e.g.
    ``("--snapshot-entries", "300")`` to snapshot and compact often under the faults).
    ``out_dir`` defaults to a new temporary directory, kept (the command line picks a dated
    directory instead).
    """

    workload: WorkloadKind = field(
        default="register",
        metadata=_cli(
            "register: read/write/cas on a few keys, checked for linearizability; set: each "
            "client adds elements no one else adds to a few sets, checked for every add "
            "taking effect exactly once"
        ),
    )
    nodes: int = field(default=3, metadata=_cli("cluster size", metavar="N", minimum=1))
    clients: int = field(default=10, metadata=_cli("concurrent clients", metavar="C", minimum=1))
    keys: int = field(default=5, metadata=_cli("keys in use at a time", metavar="K", minimum=1))
    seconds: float = field(
        default=30.0, metadata=_cli("how long the clients run", metavar="T", minimum=0.1)
    )
    nemesis: str = field(
        default="partition",
        metadata=_cli(
            "the faults to inject; partition, kill, pause, member and all mix their variants; none "
            "runs without faults",
            choices=tuple(NEMESES),
        ),
    )
    seed: int | None = field(default=None, metadata=_cli("random seed", default_text="random"))
    out_dir: Path | None = field(
        default=None,
        metadata=_cli(
            "output directory: the history, the pictures, the summary and the logs",
            metavar="DIR",
            flag="--out",
            default_text="raftpy-jepsen/<date-time>",
        ),
    )
    interval: float = field(
        default=5.0,
        metadata=_cli("mean length of quiet periods and of faults", metavar="S", minimum=0.1),
    )
    op_timeout: float = field(
        default=1.0, metadata=_cli("deadline of each client call", metavar="S", minimum=0.01)
    )
    ops_per_key: int = field(
        default=400,
        metadata=_cli("retire a key after N operations; 0 never", metavar="N", minimum=0),
    )
    tick_ms: float = field(
        default=20.0, metadata=_cli("the servers' tick", metavar="MS", minimum=1)
    )
    election_ticks: int = field(
        default=10,
        metadata=_cli("the servers' election timeout in ticks", metavar="N", minimum=2),
    )
    read_fraction: float = 1 / 3
    values: int = 5
    read_consistency: ReadConsistency = field(
        default="linearizable",
        metadata=_cli(
            "what the clients ask reads for; stale reads may legitimately fail the check"
        ),
    )
    client_routing: ClientRouting = field(
        default="home",
        metadata=_cli(
            "home: a client lives on a node and is partitioned with it; direct: clients reach "
            "every node directly"
        ),
    )
    unsafe_stale_reads: bool = field(
        default=False,
        metadata=_cli(
            f"TEST ONLY: start the servers with {UNSAFE_STALE_READS_ENV}=1 (a leader answers "
            "reads without confirming leadership); the run should then fail"
        ),
    )
    unsafe_resend: bool = field(
        default=False,
        metadata=_cli(
            "TEST ONLY, set workload: resend an add whose outcome is unknown as a new write "
            "(which may apply it twice); the run should then find duplicates"
        ),
    )
    check_timeout: float = field(
        default=120.0,
        metadata=_cli("the checker's time limit in seconds", metavar="S", minimum=0.1),
    )
    server_module: str = field(
        default="raftpy.examples.hashmap",
        metadata=_cli(
            "the server to run as python -m MODULE server ...: a module with the command line "
            "of raftpy.examples.service and the hash map's commands",
            metavar="MODULE",
        ),
    )
    server_env: Mapping[str, str] = field(default_factory=dict)
    server_args: tuple[str, ...] = ()
    keep_data: bool = field(default=False, metadata=_cli("keep the nodes' data dirs"))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.keys < 1:
            raise ValueError(f"keys must be >= 1, got {self.keys}")
        for name in ("seconds", "interval", "op_timeout", "tick_ms", "check_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.nemesis not in NEMESES:
            raise ValueError(f"unknown nemesis {self.nemesis!r} (known: {', '.join(NEMESES)})")
        if self.ops_per_key < 0:
            raise ValueError(f"ops_per_key must be >= 0, got {self.ops_per_key}")
        if self.election_ticks < 2:
            raise ValueError(f"election_ticks must be >= 2, got {self.election_ticks}")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise ValueError(f"read_fraction must be in [0, 1], got {self.read_fraction}")
        if self.values < 2:
            raise ValueError(f"values must be >= 2, got {self.values}")
        if self.read_consistency not in get_args(ReadConsistency):
            raise ValueError(f"unknown read consistency {self.read_consistency!r}")
        if self.workload not in get_args(WorkloadKind):
            raise ValueError(f"unknown workload {self.workload!r}")
        if self.client_routing not in get_args(ClientRouting):
            raise ValueError(f"unknown client routing {self.client_routing!r}")


SNAPSHOT_ENTRIES_FLAG: Final = "--snapshot-entries"
"""The one server option ``raftpy jepsen`` offers (it becomes ``server_args``)."""


def option_flag(f: dataclasses.Field[object], opt: Option) -> str:
    """The command-line flag of the field ``f`` that carries ``opt``."""
    return opt.flag or "--" + f.name.replace("_", "-")


def _text(value: object) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def options_line(config: JepsenConfig, seed: int) -> str:
    """Every setting of a run, ``name=value``, with the seed it used."""
    parts = []
    for f in dataclasses.fields(config):
        value = seed if f.name == "seed" else getattr(config, f.name)
        if isinstance(value, Mapping):
            value = dict(value)
        parts.append(f"{f.name}={_text(value)}")
    return " ".join(parts)


def replay_command(config: JepsenConfig, seed: int) -> tuple[str, list[str]]:
    """The ``raftpy jepsen`` command that runs ``config`` again with ``seed`` (the settings
    that differ from the defaults, and the seed), and the settings it cannot give (those not
    on the command line), as ``name=value``."""
    args = ["raftpy", "jepsen"]
    missing: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        opt = f.metadata.get(OPTION)
        if f.name in ("out_dir", "server_args", "server_env"):
            continue
        if opt is None:
            if value != f.default:
                missing.append(f"{f.name}={_text(value)}")
            continue
        if f.name == "seed":
            args += [option_flag(f, opt), str(seed)]
        elif value == f.default:
            continue
        elif isinstance(value, bool):
            args.append(option_flag(f, opt))
        else:
            args += [option_flag(f, opt), _text(value)]
    extra = config.server_args
    if len(extra) == 2 and extra[0] == SNAPSHOT_ENTRIES_FLAG:
        args += list(extra)
    elif extra:
        missing.append(f"server_args={extra!r}")
    if config.server_env:
        missing.append(f"server_env={dict(config.server_env)!r}")
    return shlex.join(args), missing
