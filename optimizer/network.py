"""The feeder model: buses, branches and the radial tree they form, in per unit.

A `Network` is validated when it is built: it must be a single radial tree rooted at the slack
bus, with non-negative resistances and no branch to an unknown bus. The tree (each bus's parent,
feeding branch, children, and a root-first order) is derived once, at construction.

What the model holds is what an AC power flow of a MATPOWER case needs: loads, bus shunts
(GS, BS), the branches' series impedance, charging (BR_B) and tap, the slack bus's voltage, and
generators at other buses as fixed injections (as a radial power flow treats distributed
generation). A transformer's phase shift (SHIFT) is kept but not used: on a radial feeder it
turns the angles below it and changes no magnitude, flow or loss.
"""

from __future__ import annotations

import math
import os
import stat
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from matpowercaseframes import CaseFrames

__all__ = [
    "Branch",
    "Bus",
    "Generator",
    "Network",
    "NetworkError",
    "load_matpower",
    "network_from_tables",
    "write_matpower",
]


class NetworkError(ValueError):
    """A feeder description that cannot be used: the message names the bus or branch."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bus:
    """One bus: its number as in the case file, its own load and shunt, and the voltage band
    the file gives it, if any (the dispatch holds the config's band unless told otherwise)."""

    id: int
    p_load_kw: float
    q_load_kvar: float
    base_kv: float
    v_min_pu: float | None = None
    v_max_pu: float | None = None
    gs_kw: float = 0.0
    """Shunt conductance: the kW it draws at 1 p.u. (MATPOWER's GS, in kW)."""
    bs_kvar: float = 0.0
    """Shunt susceptance: the kvar it injects at 1 p.u. (MATPOWER's BS, in kvar; a capacitor
    bank is positive)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Generator:
    """A generator at a bus other than the slack: a fixed injection of `p_kw` and `q_kvar`."""

    bus: int
    p_kw: float
    q_kvar: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Branch:
    """A line or transformer in per unit on the network's base MVA, as MATPOWER models it: an
    ideal `tap`:1 transformer at the from-bus side, then a pi section of series impedance
    `r_pu + j x_pu` with half the charging susceptance `b_pu` at each end. The tap may be at
    either end of the branch as the feeder runs (upstream or downstream). `shift_deg` is kept
    and not used (see the module docstring).
    """

    from_bus: int
    to_bus: int
    r_pu: float
    x_pu: float
    rating_kva: float | None = None
    tap: float = 1.0
    b_pu: float = 0.0
    shift_deg: float = 0.0
    in_service: bool = True

    @property
    def label(self) -> str:
        """`from-to`, the name used in error messages."""
        return f"{self.from_bus}-{self.to_bus}"


def _empty_int_map() -> Mapping[int, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """A radial feeder rooted at `slack_bus`.

    Derived at construction (not part of equality or hashing):

    - `parent[bus]`: the upstream bus of every non-slack bus;
    - `feeder_branch[bus]`: the index in `branches` of the branch that feeds it (the branch is
      oriented parent -> bus in `branch_from`/`branch_to` whatever its orientation in the file);
    - `children[bus]`: the buses it feeds;
    - `order`: every bus id, root first, breadth first.

    Out-of-service branches are kept in `branches` but take no part in the tree.
    `v_slack_pu` is the slack bus's voltage as the case gives it (the daemon replaces it with
    the head meter's measurement when it has one); `generators` are the fixed injections at
    other buses.
    """

    name: str
    base_mva: float
    slack_bus: int
    buses: tuple[Bus, ...]
    branches: tuple[Branch, ...]
    v_slack_pu: float = 1.0
    generators: tuple[Generator, ...] = ()
    parent: Mapping[int, int] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=_empty_int_map
    )
    feeder_branch: Mapping[int, int] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=_empty_int_map
    )
    children: Mapping[int, tuple[int, ...]] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )
    order: tuple[int, ...] = field(init=False, repr=False, compare=False, hash=False, default=())
    _by_id: Mapping[int, Bus] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if not self.base_mva > 0:
            raise NetworkError(f"network {self.name!r}: base_mva must be > 0, got {self.base_mva}")
        by_id: dict[int, Bus] = {}
        for bus in self.buses:
            if bus.id in by_id:
                raise NetworkError(f"network {self.name!r}: bus {bus.id} is defined twice")
            _check_bus(bus)
            by_id[bus.id] = bus
        if self.slack_bus not in by_id:
            raise NetworkError(f"network {self.name!r}: slack bus {self.slack_bus} is not a bus")
        if not (math.isfinite(self.v_slack_pu) and 0.5 <= self.v_slack_pu <= 1.5):
            raise NetworkError(
                f"network {self.name!r}: slack voltage must be within 0.5..1.5 p.u., got "
                f"{self.v_slack_pu}"
            )
        for gen in self.generators:
            _check_generator(gen, by_id, self.slack_bus)
        adjacency: dict[int, list[tuple[int, int]]] = {b: [] for b in by_id}
        for index, branch in enumerate(self.branches):
            if not branch.in_service:
                continue
            _check_branch(branch, by_id)
            adjacency[branch.from_bus].append((branch.to_bus, index))
            adjacency[branch.to_bus].append((branch.from_bus, index))
        parent: dict[int, int] = {}
        feeder: dict[int, int] = {}
        children: dict[int, list[int]] = {b: [] for b in by_id}
        order: list[int] = [self.slack_bus]
        queue = deque([self.slack_bus])
        seen = {self.slack_bus}
        while queue:
            bus_id = queue.popleft()
            for neighbour, index in sorted(adjacency[bus_id]):
                if index == feeder.get(bus_id):
                    continue
                if neighbour in seen:
                    branch = self.branches[index]
                    raise NetworkError(
                        f"network {self.name!r} is not radial: branch {branch.label} closes a "
                        f"loop through bus {neighbour}"
                    )
                seen.add(neighbour)
                parent[neighbour] = bus_id
                feeder[neighbour] = index
                children[bus_id].append(neighbour)
                order.append(neighbour)
                queue.append(neighbour)
        islanded = sorted(set(by_id) - seen)
        if islanded:
            raise NetworkError(
                f"network {self.name!r}: bus(es) {', '.join(map(str, islanded))} not connected "
                f"to slack bus {self.slack_bus} (islanded)"
            )
        object.__setattr__(self, "parent", MappingProxyType(parent))
        object.__setattr__(self, "feeder_branch", MappingProxyType(feeder))
        object.__setattr__(
            self, "children", MappingProxyType({b: tuple(c) for b, c in children.items()})
        )
        object.__setattr__(self, "order", tuple(order))
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    def bus(self, bus_id: int) -> Bus:
        """The bus numbered `bus_id`; NetworkError if there is none."""
        try:
            return self._by_id[bus_id]
        except KeyError:
            raise NetworkError(f"network {self.name!r} has no bus {bus_id}") from None

    def has_bus(self, bus_id: int) -> bool:
        """Whether a bus numbered `bus_id` exists."""
        return bus_id in self._by_id

    def branch_to(self, bus_id: int) -> Branch:
        """The in-service branch feeding non-slack bus `bus_id`."""
        return self.branches[self.feeder_branch[bus_id]]

    @property
    def bus_ids(self) -> tuple[int, ...]:
        """Bus ids in file order."""
        return tuple(b.id for b in self.buses)

    @property
    def base_kw(self) -> float:
        """The power base in kW (1 p.u. of power)."""
        return self.base_mva * 1000.0

    @property
    def total_load_kw(self) -> float:
        """Sum of the buses' own active load (kW)."""
        return math.fsum(b.p_load_kw for b in self.buses)

    @property
    def total_load_kvar(self) -> float:
        """Sum of the buses' own reactive load (kvar)."""
        return math.fsum(b.q_load_kvar for b in self.buses)

    @property
    def loads_kw(self) -> Mapping[int, float]:
        """Each bus's own active load (kW), by bus id."""
        return {b.id: b.p_load_kw for b in self.buses}

    @property
    def loads_kvar(self) -> Mapping[int, float]:
        """Each bus's own reactive load (kvar), by bus id."""
        return {b.id: b.q_load_kvar for b in self.buses}

    @property
    def fixed_gen_kw(self) -> Mapping[int, float]:
        """The generators' fixed active injection (kW), summed by bus."""
        out: dict[int, float] = {}
        for g in self.generators:
            out[g.bus] = out.get(g.bus, 0.0) + g.p_kw
        return out

    @property
    def fixed_gen_kvar(self) -> Mapping[int, float]:
        """The generators' fixed reactive injection (kvar), summed by bus."""
        out: dict[int, float] = {}
        for g in self.generators:
            out[g.bus] = out.get(g.bus, 0.0) + g.q_kvar
        return out

    @property
    def has_shunts(self) -> bool:
        """Whether any bus shunt or in-service branch charging is modelled."""
        return any(b.gs_kw or b.bs_kvar for b in self.buses) or any(
            br.b_pu for br in self.branches if br.in_service
        )


def _check_bus(bus: Bus) -> None:
    for name in ("p_load_kw", "q_load_kvar", "base_kv", "gs_kw", "bs_kvar"):
        value = getattr(bus, name)
        if not math.isfinite(value):
            raise NetworkError(f"bus {bus.id}: {name} must be finite, got {value}")
    if not bus.base_kv > 0:
        raise NetworkError(f"bus {bus.id}: base_kv must be > 0, got {bus.base_kv}")
    for name in ("v_min_pu", "v_max_pu"):
        value = getattr(bus, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise NetworkError(f"bus {bus.id}: {name} must be > 0 or absent, got {value}")
    if bus.v_min_pu is not None and bus.v_max_pu is not None and bus.v_min_pu > bus.v_max_pu:
        raise NetworkError(
            f"bus {bus.id}: voltage band must satisfy v_min_pu <= v_max_pu, got "
            f"[{bus.v_min_pu}, {bus.v_max_pu}]"
        )


def _check_generator(gen: Generator, by_id: Mapping[int, Bus], slack_bus: int) -> None:
    if gen.bus not in by_id:
        raise NetworkError(f"generator at bus {gen.bus}: unknown bus")
    if gen.bus == slack_bus:
        raise NetworkError(
            f"generator at bus {gen.bus}: the slack bus's generators are the slack, not fixed"
        )
    for name in ("p_kw", "q_kvar"):
        value = getattr(gen, name)
        if not math.isfinite(value):
            raise NetworkError(f"generator at bus {gen.bus}: {name} must be finite, got {value}")


def _check_branch(branch: Branch, by_id: Mapping[int, Bus]) -> None:
    for end in (branch.from_bus, branch.to_bus):
        if end not in by_id:
            raise NetworkError(f"branch {branch.label}: unknown bus {end}")
    if branch.from_bus == branch.to_bus:
        raise NetworkError(f"branch {branch.label}: connects bus {branch.from_bus} to itself")
    if not math.isfinite(branch.r_pu) or branch.r_pu < 0:
        raise NetworkError(f"branch {branch.label}: r_pu must be >= 0, got {branch.r_pu}")
    # a negative reactance is a series capacitor (or one arm of a three-winding transformer)
    for name in ("x_pu", "b_pu", "shift_deg"):
        value = getattr(branch, name)
        if not math.isfinite(value):
            raise NetworkError(f"branch {branch.label}: {name} must be finite, got {value}")
    if branch.r_pu == 0 and branch.x_pu == 0:
        raise NetworkError(f"branch {branch.label}: zero impedance (r_pu = x_pu = 0)")
    if not (math.isfinite(branch.tap) and branch.tap > 0):
        raise NetworkError(f"branch {branch.label}: tap must be > 0, got {branch.tap}")
    if branch.rating_kva is not None and not branch.rating_kva > 0:
        raise NetworkError(
            f"branch {branch.label}: rating_kva must be > 0, got {branch.rating_kva}"
        )


def network_from_tables(
    *,
    name: str,
    base_mva: float,
    slack_bus: int,
    buses: Sequence[Mapping[str, float]],
    branches: Sequence[Mapping[str, float]],
) -> Network:
    """A network from the config's inline tables.

    Bus rows: `id`, `p_kw`, `q_kvar`, `base_kv`, optional `v_min_pu`, `v_max_pu`.
    Branch rows: `from_bus`, `to_bus`, `r_ohm`, `x_ohm`, optional `rating_kva`. Ohms are
    converted to per unit on `base_mva` and the from-bus `base_kv` (Z_base = kV² / MVA).
    """
    bus_records: list[Bus] = []
    for row_no, row in enumerate(buses):
        try:
            bus_records.append(
                Bus(
                    id=int(row["id"]),
                    p_load_kw=float(row["p_kw"]),
                    q_load_kvar=float(row["q_kvar"]),
                    base_kv=float(row["base_kv"]),
                    v_min_pu=_optional(row.get("v_min_pu")),
                    v_max_pu=_optional(row.get("v_max_pu")),
                )
            )
        except KeyError as err:
            raise NetworkError(f"bus row {row_no}: missing field {err.args[0]!r}") from None
    base_kv = {b.id: b.base_kv for b in bus_records}
    branch_records: list[Branch] = []
    for row_no, row in enumerate(branches):
        try:
            from_bus, to_bus = int(row["from_bus"]), int(row["to_bus"])
            r_ohm, x_ohm = float(row["r_ohm"]), float(row["x_ohm"])
        except KeyError as err:
            raise NetworkError(f"branch row {row_no}: missing field {err.args[0]!r}") from None
        if from_bus not in base_kv:
            raise NetworkError(f"branch {from_bus}-{to_bus}: unknown bus {from_bus}")
        z_base_ohm = base_kv[from_bus] ** 2 / base_mva
        rating = row.get("rating_kva")
        branch_records.append(
            Branch(
                from_bus=from_bus,
                to_bus=to_bus,
                r_pu=r_ohm / z_base_ohm,
                x_pu=x_ohm / z_base_ohm,
                rating_kva=None if rating is None else float(rating),
            )
        )
    return Network(
        name=name,
        base_mva=float(base_mva),
        slack_bus=int(slack_bus),
        buses=tuple(bus_records),
        branches=tuple(branch_records),
    )


CASE_MAX_BYTES = 50 << 20
"""A case file is a regular file of at most 50 MiB (checked before it is read)."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _check_case_file(path: Path) -> None:
    try:
        st = os.stat(path)
    except ValueError:  # a NUL byte
        raise NetworkError(f"{str(path)!r}: a path cannot contain a NUL byte") from None
    except OSError as err:
        raise NetworkError(f"{path}: cannot read MATPOWER case: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NetworkError(f"{path}: cannot read MATPOWER case: not a regular file")
    if st.st_size > CASE_MAX_BYTES:
        raise NetworkError(
            f"{path}: cannot read MATPOWER case: {st.st_size} bytes, more than the "
            f"{CASE_MAX_BYTES >> 20} MiB allowed"
        )


def _optional(value: float | None) -> float | None:
    return None if value is None else float(value)


def _file_limit(value: float) -> float | None:
    """A voltage limit as a case gives it, or None where it gives none: converters write VMIN 0
    and VMAX 2 (or NaN, or nothing) for a network without limits."""
    return value if math.isfinite(value) and 0.0 < value < 2.0 else None


def _file_band(v_min: float, v_max: float) -> tuple[float | None, float | None]:
    low, high = _file_limit(v_min), _file_limit(v_max)
    if low is not None and high is not None and low > high:
        return None, None  # no band can be made of these: treat as none given
    return low, high


def _column(table: Any, name: str, default: float) -> list[float]:
    """A column of a case table as floats (`default` where the file leaves it out)."""
    if name not in table.columns:
        return [default] * len(table)
    return [float(v) for v in table[name]]


def load_matpower(path: str | Path) -> Network:
    """A network from a MATPOWER case file (`.m`, or `.xlsx` as matpowercaseframes reads it).

    Any valid version-2 case of a radial feeder:

    - loads from PD/QD and bus shunts from GS/BS (MW, MVAr, at 1 p.u.);
    - the voltage limits VMIN/VMAX where the file gives usable ones (0 < v < 2, VMIN <= VMAX);
      VMIN 0, VMAX 2, NaN or none at all mean "no limit" (the dispatch holds the config's band);
    - the slack bus is the bus of type 3, its voltage the VG of its first in-service generator,
      else its VM; in-service generators at other buses are fixed injections of PG/QG;
    - isolated buses (type 4) are left out with everything connected to them; out-of-service
      branches and generators are dropped;
    - branches keep their charging BR_B; a tap of 0 means 1; RATE_A of 0 means unrated;
      SHIFT is kept and not used (radial: no effect on magnitudes).

    The file is a regular file of at most `CASE_MAX_BYTES`; every problem is a one-line
    `NetworkError`.
    """
    path = Path(path)
    _check_case_file(path)
    try:
        frames = CaseFrames(str(path))
        base_mva = float(frames.baseMVA)
        bus_table = frames.bus
        branch_table = frames.branch
        gen_table = getattr(frames, "gen", None)
    except Exception as err:  # any parser failure means a bad case file
        raise NetworkError(f"{path}: cannot read MATPOWER case: {_one_line(err)}") from err
    try:
        bus_ids = [int(v) for v in bus_table["BUS_I"]]
        types = [int(v) for v in bus_table["BUS_TYPE"]]
        isolated = {b for b, t in zip(bus_ids, types, strict=True) if t == 4}
        slack = [b for b, t in zip(bus_ids, types, strict=True) if t == 3]
        if len(slack) != 1:
            raise NetworkError(
                f"{path}: expected exactly one slack bus (type 3), found {len(slack)}"
            )
        slack_bus = slack[0]
        columns = {
            name: _column(bus_table, name, default)
            for name, default in (
                ("PD", 0.0),
                ("QD", 0.0),
                ("GS", 0.0),
                ("BS", 0.0),
                ("VM", 1.0),
                ("BASE_KV", 0.0),
                ("VMAX", math.nan),
                ("VMIN", math.nan),
            )
        }
        buses = []
        for k, bus_id in enumerate(bus_ids):
            if bus_id in isolated:
                continue
            base_kv = columns["BASE_KV"][k]
            v_min, v_max = _file_band(columns["VMIN"][k], columns["VMAX"][k])
            buses.append(
                Bus(
                    id=bus_id,
                    p_load_kw=columns["PD"][k] * 1000.0,
                    q_load_kvar=columns["QD"][k] * 1000.0,
                    base_kv=base_kv if base_kv > 0 else 1.0,
                    v_min_pu=v_min,
                    v_max_pu=v_max,
                    gs_kw=columns["GS"][k] * 1000.0,
                    bs_kvar=columns["BS"][k] * 1000.0,
                )
            )
        branches = []
        for row in branch_table.itertuples():
            if float(row.BR_STATUS) == 0:
                continue
            if int(row.F_BUS) in isolated or int(row.T_BUS) in isolated:
                continue
            branches.append(
                Branch(
                    from_bus=int(row.F_BUS),
                    to_bus=int(row.T_BUS),
                    r_pu=float(row.BR_R),
                    x_pu=float(row.BR_X),
                    rating_kva=float(row.RATE_A) * 1000.0 if float(row.RATE_A) > 0 else None,
                    tap=float(row.TAP) if float(row.TAP) != 0 else 1.0,
                    b_pu=float(getattr(row, "BR_B", 0.0)),
                    shift_deg=float(getattr(row, "SHIFT", 0.0)),
                )
            )
        v_slack = _slack_voltage(columns["VM"][bus_ids.index(slack_bus)])
        generators = []
        slack_gen_seen = False
        if gen_table is not None:
            for row in gen_table.itertuples():
                bus_id = int(row.GEN_BUS)
                if float(getattr(row, "GEN_STATUS", 1.0)) <= 0 or bus_id in isolated:
                    continue
                if bus_id == slack_bus:
                    if not slack_gen_seen:
                        slack_gen_seen = True
                        v_slack = _slack_voltage(float(row.VG), fallback=v_slack)
                    continue
                generators.append(
                    Generator(
                        bus=bus_id, p_kw=float(row.PG) * 1000.0, q_kvar=float(row.QG) * 1000.0
                    )
                )
    except NetworkError:
        raise
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError, IndexError) as err:
        # a NaN bus number, a missing column, text where a number belongs
        raise NetworkError(f"{path}: bad MATPOWER case: {_one_line(err)}") from None
    return Network(
        name=path.stem,
        base_mva=base_mva,
        slack_bus=slack_bus,
        buses=tuple(buses),
        branches=tuple(branches),
        v_slack_pu=v_slack,
        generators=tuple(generators),
    )


def _slack_voltage(value: float, *, fallback: float = 1.0) -> float:
    """A slack voltage from the file, or `fallback` where it gives none that is usable (a VM or
    VG of 0 or NaN: the file was never solved)."""
    return value if math.isfinite(value) and 0.5 <= value <= 1.5 else fallback


def _num(value: float) -> str:
    """A number as MATPOWER text, exactly (shortest round-trip repr)."""
    return repr(float(value))


def write_matpower(net: Network, path: str | Path) -> None:
    """Write `net` as a MATPOWER (version 2) case file that `load_matpower` reads back.

    The slack bus is type 3 at `v_slack_pu` with one generator, the fixed generators follow
    it; every other bus is a PQ bus. A bus without a voltage limit gets VMIN 0 / VMAX 2.
    """
    lines = [
        f"function mpc = {Path(path).stem}",
        "mpc.version = '2';",
        f"mpc.baseMVA = {_num(net.base_mva)};",
        "mpc.bus = [",
    ]
    for b in net.buses:
        kind = 3 if b.id == net.slack_bus else 1
        vm = net.v_slack_pu if b.id == net.slack_bus else 1.0
        v_max = 2.0 if b.v_max_pu is None else b.v_max_pu
        v_min = 0.0 if b.v_min_pu is None else b.v_min_pu
        lines.append(
            f"\t{b.id}\t{kind}\t{_num(b.p_load_kw / 1000.0)}\t{_num(b.q_load_kvar / 1000.0)}"
            f"\t{_num(b.gs_kw / 1000.0)}\t{_num(b.bs_kvar / 1000.0)}\t1\t{_num(vm)}\t0"
            f"\t{_num(b.base_kv)}\t1\t{_num(v_max)}\t{_num(v_min)};"
        )
    lines += ["];", "mpc.gen = ["]
    lines.append(f"\t{net.slack_bus}\t0\t0\t10\t-10\t{_num(net.v_slack_pu)}\t100\t1\t10\t0;")
    for g in net.generators:
        p, q = _num(g.p_kw / 1000.0), _num(g.q_kvar / 1000.0)
        lines.append(f"\t{g.bus}\t{p}\t{q}\t{q}\t{q}\t1\t100\t1\t{p}\t0;")
    lines += ["];", "mpc.branch = ["]
    for br in net.branches:
        rate = 0.0 if br.rating_kva is None else br.rating_kva / 1000.0
        tap = 0.0 if br.tap == 1.0 else br.tap
        lines.append(
            f"\t{br.from_bus}\t{br.to_bus}\t{_num(br.r_pu)}\t{_num(br.x_pu)}\t{_num(br.b_pu)}"
            f"\t{_num(rate)}\t{_num(rate)}\t{_num(rate)}\t{_num(tap)}\t{_num(br.shift_deg)}"
            f"\t{int(br.in_service)}\t-360\t360;"
        )
    lines.append("];")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
