"""The GPU placement plan of a Serve profile, checked: no card over-committed by memory, every replica placeable.

In: a profile (Ray's `ServeDeploySchema`, e.g. serve_config/cluster.yaml) and its plan (serve_config/plans/<profile>
.yaml: hardware, a memory estimate per GPU deployment with its source, and the options of planned deployments).
Out: a `PlanReport`: per scenario ("start": the replicas Serve starts with; "max": every autoscaling maximum) the
cards with the fraction and memory placed on each, and every error as a sentence naming the deployment and the
number. Ray's `num_gpus` is logical, so this is the only thing between a plan and two models OOMing one card.

Two checks, because either alone misses cases:
- per deployment: a replica's estimate must fit in its own fraction of the card's budget. Then whatever packing
  Ray chooses (its order depends on timing), the estimates on a card add up to at most the budget.
- per card: a first-fit-decreasing placement (fractions to the fullest card that fits, as Ray's fractional GPU
  allocator does; whole GPUs to free cards) of every replica onto the nodes, honouring custom resources and
  placement-group strategies, must place everything, with each card's memory under its budget.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from almquist.config.base import Strict
from almquist.runtime import PROFILE_DIR, profile_path

PLAN_DIR = PROFILE_DIR / "plans"
NODE_TYPE_UNITS = 1000  # a node declares node_type_<type>: 1000; a replica pinned to the type asks for 1
SCENARIOS = ("start", "max")
INGESTION_EMBEDDER = "IngestionEmbedder"  # the ingestion pipelines' embedding actor (KnowledgeConfig.embed_*)
_EPS = 1e-9


class PlanError(ValueError):
    """A plan or profile that cannot be checked at all (unreadable, invalid); the message says where."""


class GpuSpec(Strict):
    model: str
    memory_gib: float = Field(gt=0)
    reserved_gib: float = Field(0.0, ge=0, description="Per card, never given to models (driver, fragmentation).")

    @property
    def budget_gib(self) -> float:
        return self.memory_gib - self.reserved_gib


class NodeType(Strict):
    gpus: int = Field(ge=0)
    cpus: float = Field(gt=0)
    memory_gib: float = Field(gt=0)


class Node(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: str
    address: str


class Estimate(Strict):
    """GPU memory of one replica on each card it uses."""

    weights_gib: float = Field(ge=0)
    runtime_gib: float = Field(ge=0, description="Activations, KV cache, CUDA context, library workspaces.")
    source: str = Field(min_length=10, description="Where the figures come from.")
    claims_card_fraction: str | None = Field(
        None, description="Dotted path into the app's args of a fraction of the card the engine claims (vLLM)."
    )

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.runtime_gib


class PlannedDeployment(Strict):
    """A deployment a later issue builds: its options as the profile will hold them."""

    num_gpus: float = Field(gt=0, le=1)
    num_cpus: float = Field(1.0, ge=0)
    node_type: str | None = None
    min_replicas: int = Field(1, ge=0)
    initial_replicas: int | None = Field(None, ge=0)
    max_replicas: int = Field(1, ge=1)


class Plan(Strict):
    profile: str
    gpu: GpuSpec
    node_types: dict[str, NodeType]
    nodes: list[Node] = Field(min_length=1)
    estimates: dict[str, Estimate] = Field(default_factory=dict)
    planned: dict[str, PlannedDeployment] = Field(default_factory=dict)
    # Plain Ray actors that hold a GPU fraction (not Serve deployments): their options come from the profile's args
    # (`INGESTION_EMBEDDER` from `knowledge.embed_num_gpus`); the plan repeats them so their memory is counted.
    actors: dict[str, PlannedDeployment] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        for node in self.nodes:
            if node.type not in self.node_types:
                raise ValueError(f"node {node.name}: unknown type {node.type!r}; known: {sorted(self.node_types)}")
        for name, planned in self.planned.items():
            if planned.node_type is not None and planned.node_type not in self.node_types:
                raise ValueError(f"planned {name}: unknown node_type {planned.node_type!r}")
        return self

    def node_resources(self, node: Node) -> dict[str, float]:
        """The custom resources `ray start --resources` declares on a node: its name and its type."""
        return {f"node_{node.name}": 1, f"node_type_{node.type}": NODE_TYPE_UNITS}

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise PlanError(f"no node {name!r} in the plan; nodes: {[n.name for n in self.nodes]}")


def plan_path(profile: str | Path) -> Path:
    """serve_config/plans/<profile>.yaml for a profile name or a profile's path."""
    return PLAN_DIR / f"{Path(profile).stem}.yaml"


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"no placement plan at {path}")
    try:
        return Plan.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as error:
        raise PlanError(f"{path} is not valid YAML: {error}") from None
    except ValidationError as error:
        raise PlanError(f"{path}: {_validation_lines(error, None)}") from None


def load_profile_for_plan(path: str | Path) -> Any:
    """The profile parsed with Ray's `ServeDeploySchema`; a schema error names the deployment it is in."""
    from ray.serve.schema import ServeDeploySchema

    path = profile_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PlanError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{path} is not a Serve config (a mapping with `applications:`)")
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as error:
        raise PlanError(f"{path} does not parse as a Serve config: {_validation_lines(error, raw)}") from None
    # ServeDeploySchema keeps autoscaling_config as a plain dict; Serve validates it only when deploying.
    from ray.serve.config import AutoscalingConfig

    for app in schema.applications:
        for deployment in app.deployments:
            autoscaling = _given(deployment.autoscaling_config)
            if not autoscaling:
                continue
            try:
                AutoscalingConfig.model_validate(autoscaling)
            except ValidationError as error:
                lines = "; ".join(
                    f"autoscaling_config.{'.'.join(map(str, item['loc']))}: {item['msg']} (got {item.get('input')!r})"
                    for item in error.errors()
                )
                raise PlanError(f"{path} does not parse: deployment {deployment.name}: {lines}") from None
    return schema


def _validation_lines(error: ValidationError, raw: dict | None) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(str(part) for part in loc)
        if raw is not None and loc[:1] == ["applications"] and len(loc) >= 4 and loc[2] == "deployments":
            try:
                name = raw["applications"][loc[1]]["deployments"][loc[3]]["name"]
                where = f"deployment {name}: " + ".".join(str(part) for part in loc[4:])
            except (IndexError, KeyError, TypeError):
                pass
        lines.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


@dataclass(frozen=True)
class DeploymentDemand:
    """What one deployment asks of the cluster per replica, and how many replicas per scenario."""

    app: str
    name: str
    bundles: tuple[dict[str, float], ...]
    strategy: str
    replicas: dict[str, int]
    estimate: Estimate | None
    planned: bool = False

    @property
    def gpus_per_replica(self) -> float:
        return sum(bundle.get("GPU", 0.0) for bundle in self.bundles)


@dataclass
class Card:
    """One GPU of one node, as the placement leaves it."""

    node: str
    index: int
    used: float = 0.0
    memory_gib: float = 0.0
    residents: list[str] = field(default_factory=list)


@dataclass
class Placement:
    scenario: str
    cards: list[Card]
    replicas: dict[str, list[str]]  # deployment -> the node of each placed replica
    unplaced: list[str]

    def node_memory(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for card in self.cards:
            totals[card.node] = totals.get(card.node, 0.0) + card.memory_gib
        return totals


@dataclass
class PlanReport:
    plan: Plan
    demands: list[DeploymentDemand]
    placements: dict[str, Placement]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def _given(value: Any) -> Any:
    """A schema field's value, or None where Ray's schema left its DEFAULT sentinel (the field was not set)."""
    return None if type(value).__name__ == "DEFAULT" else value


def _replica_counts(options: Any, name: str, errors: list[str]) -> dict[str, int]:
    autoscaling = _given(getattr(options, "autoscaling_config", None))
    if autoscaling:
        auto = autoscaling if isinstance(autoscaling, dict) else autoscaling.model_dump()
        low, high = int(auto.get("min_replicas", 1)), auto.get("max_replicas")
        initial = auto.get("initial_replicas")
        if high is None:
            errors.append(f"{name}: autoscaling_config has no max_replicas, so the plan cannot bound it")
            high = low
        return {"start": int(initial if initial is not None else low), "max": int(high)}
    replicas = _given(getattr(options, "num_replicas", None))
    if replicas == "auto":
        errors.append(f"{name}: num_replicas 'auto' without autoscaling bounds cannot be planned")
        return {"start": 1, "max": 1}
    count = 1 if replicas is None else int(replicas)
    return {"start": count, "max": count}


def _profile_demand(app: Any, deployment: Any, errors: list[str]) -> DeploymentDemand:
    options = _given(deployment.ray_actor_options)
    actor: dict[str, float] = {}
    if options is not None:
        actor["CPU"] = 1.0 if options.num_cpus is None else float(options.num_cpus)
        actor["GPU"] = float(options.num_gpus or 0)
        actor.update({key: float(value) for key, value in (options.resources or {}).items()})
    else:
        actor = {"CPU": 1.0, "GPU": 0.0}
    bundles_raw = _given(getattr(deployment, "placement_group_bundles", None))
    if bundles_raw:
        bundles = tuple({key: float(value) for key, value in bundle.items()} for bundle in bundles_raw)
        strategy = _given(getattr(deployment, "placement_group_strategy", None)) or "PACK"
        for key, value in actor.items():
            if value > bundles[0].get(key, 0.0) + _EPS:
                errors.append(
                    f"{deployment.name}: ray_actor_options asks {key}={value:g}, more than its first placement-group"
                    f" bundle holds ({bundles[0].get(key, 0.0):g}); Serve runs the replica inside that bundle"
                )
    else:
        bundles, strategy = (actor,), "PACK"
    for bundle in bundles:
        gpus = bundle.get("GPU", 0.0)
        if gpus > 1 and abs(gpus - round(gpus)) > _EPS:
            errors.append(f"{deployment.name}: num_gpus {gpus:g} above 1 must be a whole number of cards")
    return DeploymentDemand(
        app=app.name,
        name=deployment.name,
        bundles=bundles,
        strategy=strategy,
        replicas=_replica_counts(deployment, deployment.name, errors),
        estimate=None,
    )


def _planned_demand(name: str, planned: PlannedDeployment) -> DeploymentDemand:
    bundle = {"CPU": planned.num_cpus, "GPU": planned.num_gpus}
    if planned.node_type:
        bundle[f"node_type_{planned.node_type}"] = 1.0
    start = planned.initial_replicas if planned.initial_replicas is not None else planned.min_replicas
    return DeploymentDemand(
        app="(planned)",
        name=name,
        bundles=(bundle,),
        strategy="PACK",
        replicas={"start": start, "max": planned.max_replicas},
        estimate=None,
        planned=True,
    )


def _check_ingestion_embedder(schema: Any, plan: Plan, errors: list[str]) -> None:
    """A profile whose ingestion embeds on a GPU fraction needs the same actor in the plan, and the other way round."""
    for app in schema.applications:
        if "knowledge" not in (app.args or {}):
            continue  # an app without a knowledge base (the browser avatar's bridge)
        knowledge = app.args["knowledge"] or {}
        gpus = float(knowledge.get("embed_num_gpus", 0) or 0)
        planned = plan.actors.get(INGESTION_EMBEDDER)
        if gpus <= 0:
            if planned is not None:
                errors.append(
                    f"{INGESTION_EMBEDDER}: planned with num_gpus {planned.num_gpus:g}, but the profile's"
                    " knowledge.embed_num_gpus is 0 (the actor runs on CPU)"
                )
            continue
        if planned is None:
            errors.append(
                f"{INGESTION_EMBEDDER}: the profile's knowledge.embed_num_gpus is {gpus:g}, but the plan has"
                f" no `actors: {INGESTION_EMBEDDER}` entry counting its memory"
            )
            continue
        if abs(planned.num_gpus - gpus) > _EPS:
            errors.append(
                f"{INGESTION_EMBEDDER}: num_gpus is {planned.num_gpus:g} in the plan but {gpus:g} in the"
                " profile's knowledge.embed_num_gpus"
            )
        pinned = {key.removeprefix("node_type_") for key in (knowledge.get("embed_resources") or {})}
        if planned.node_type and pinned != {planned.node_type}:
            errors.append(
                f"{INGESTION_EMBEDDER}: pinned to node type {planned.node_type!r} in the plan but"
                f" {sorted(pinned) or 'none'} by the profile's knowledge.embed_resources"
            )


def _lookup(args: dict[str, Any], dotted: str) -> Any:
    value: Any = args
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def demands_of(schema: Any, plan: Plan, errors: list[str]) -> list[DeploymentDemand]:
    """Every deployment of the profile and every planned one, with its estimate; problems appended to `errors`."""
    demands: list[DeploymentDemand] = []
    args_by_name: dict[str, dict[str, Any]] = {}
    for app in schema.applications:
        for deployment in app.deployments:
            demands.append(_profile_demand(app, deployment, errors))
            args_by_name[deployment.name] = app.args or {}
    in_profile = {demand.name for demand in demands}
    for name, planned in plan.planned.items():
        if name in in_profile:
            errors.append(f"{name}: is in the profile now; delete its `planned:` entry (the profile's options win)")
            continue
        demands.append(_planned_demand(name, planned))
    for name, actor in plan.actors.items():
        demands.append(replace(_planned_demand(name, actor), app="(actor)"))
    _check_ingestion_embedder(schema, plan, errors)
    known = {demand.name for demand in demands}
    for name in plan.estimates:
        if name not in known:
            errors.append(f"{name}: has a memory estimate but is neither in the profile nor planned")
    budget = plan.gpu.budget_gib
    result = []
    for demand in demands:
        estimate = plan.estimates.get(demand.name)
        result.append(DeploymentDemand(**{**demand.__dict__, "estimate": estimate}))
        if demand.gpus_per_replica <= 0:
            continue
        if estimate is None:
            errors.append(
                f"{demand.name}: asks for {demand.gpus_per_replica:g} GPU per replica but has no memory estimate in"
                f" the plan (estimates.{demand.name}: weights_gib, runtime_gib, source)"
            )
            continue
        for bundle in demand.bundles:
            gpus = bundle.get("GPU", 0.0)
            if gpus <= 0:
                continue
            allowed = min(gpus, 1.0) * budget
            if estimate.total_gib > allowed + _EPS:
                errors.append(
                    f"{demand.name}: needs {estimate.total_gib:.2f} GiB per card, but num_gpus {gpus:g} of a"
                    f" {budget:.2f} GiB budget is {allowed:.2f} GiB (ask for at least"
                    f" {estimate.total_gib / budget:.3f}): Ray could pack it beside others past the card's memory"
                )
        if estimate.claims_card_fraction:
            try:
                fraction = float(_lookup(args_by_name.get(demand.name, {}), estimate.claims_card_fraction))
            except (KeyError, TypeError, ValueError):
                errors.append(f"{demand.name}: claims_card_fraction {estimate.claims_card_fraction} is not in its args")
            else:
                claimed = fraction * plan.gpu.memory_gib
                if abs(claimed - estimate.total_gib) > 0.05:
                    errors.append(
                        f"{demand.name}: the engine claims {fraction:g} x {plan.gpu.memory_gib:g} = {claimed:.2f} GiB"
                        f" per card, but the estimate says {estimate.total_gib:.2f} GiB"
                    )
    return result


@dataclass
class _NodeState:
    node: Node
    cpus: float
    resources: dict[str, float]
    cards: list[Card]


def _fit_bundle(state: _NodeState, bundle: dict[str, float]) -> list[int] | None:
    """The card indices a bundle would take on this node (empty for a CPU-only bundle), or None if it does not fit."""
    if bundle.get("CPU", 0.0) > state.cpus + _EPS:
        return None
    for key, value in bundle.items():
        if key not in ("CPU", "GPU", "memory") and value > state.resources.get(key, 0.0) + _EPS:
            return None
    gpus = bundle.get("GPU", 0.0)
    if gpus <= 0:
        return []
    if gpus >= 1:
        free = [card.index for card in state.cards if card.used <= _EPS]
        return free[: round(gpus)] if len(free) >= round(gpus) else None
    # a fraction goes to the fullest card that still has room (best fit)
    candidates = [card for card in state.cards if 1.0 - card.used + _EPS >= gpus]
    if not candidates:
        return None
    return [min(candidates, key=lambda card: (1.0 - card.used, card.index)).index]


def _take(state: _NodeState, bundle: dict[str, float], cards: list[int], label: str, per_card_gib: float) -> None:
    state.cpus -= bundle.get("CPU", 0.0)
    for key, value in bundle.items():
        if key not in ("CPU", "GPU", "memory"):
            state.resources[key] = state.resources.get(key, 0.0) - value
    share = min(bundle.get("GPU", 0.0), 1.0)
    for index in cards:
        card = state.cards[index]
        card.used += share
        card.memory_gib += per_card_gib
        card.residents.append(label)


def place(plan: Plan, demands: list[DeploymentDemand], scenario: str, shuffle_seed: int | None = None) -> Placement:
    """First-fit-decreasing placement of every replica of `scenario` onto the plan's nodes; with `shuffle_seed`, the
    replicas come in a random order instead (Ray's order depends on timing)."""
    states = [
        _NodeState(
            node=node,
            cpus=plan.node_types[node.type].cpus,
            resources=plan.node_resources(node),
            cards=[Card(node=node.name, index=i) for i in range(plan.node_types[node.type].gpus)],
        )
        for node in plan.nodes
    ]
    replicas = [(demand, i) for demand in demands for i in range(demand.replicas[scenario])]
    replicas.sort(key=lambda item: (-item[0].gpus_per_replica, item[0].name, item[1]))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(replicas)
    placed: dict[str, list[str]] = {demand.name: [] for demand in demands}
    unplaced: list[str] = []
    for demand, index in replicas:
        per_card = demand.estimate.total_gib if demand.estimate else 0.0
        label = f"{demand.name}#{index + 1}"
        for state in states:
            trial = copy.deepcopy(state)
            ok = True
            for bundle in demand.bundles:
                cards = _fit_bundle(trial, bundle)
                if cards is None:
                    ok = False
                    break
                _take(trial, bundle, cards, label, per_card)
            if ok:
                state.cpus, state.resources, state.cards = trial.cpus, trial.resources, trial.cards
                placed[demand.name].append(state.node.name)
                break
        else:
            unplaced.append(
                f"{demand.name}: replica {index + 1} of {demand.replicas[scenario]} ({scenario}) does not fit: no node"
                f" has {_describe(demand.bundles)} free"
            )
    every_card = [card for state in states for card in state.cards]
    return Placement(scenario=scenario, cards=every_card, replicas=placed, unplaced=unplaced)


def _describe(bundles: tuple[dict[str, float], ...]) -> str:
    return " + ".join("{" + ", ".join(f"{k}: {v:g}" for k, v in bundle.items() if v) + "}" for bundle in bundles)


def check(schema: Any, plan: Plan) -> PlanReport:
    """Both checks over every scenario; see the module docstring."""
    errors: list[str] = []
    demands = demands_of(schema, plan, errors)
    placements = {scenario: place(plan, demands, scenario) for scenario in SCENARIOS}
    budget = plan.gpu.budget_gib
    for scenario, placement in placements.items():
        errors.extend(placement.unplaced)
        for card in placement.cards:
            if card.memory_gib > budget + _EPS:
                errors.append(
                    f"{card.node} GPU {card.index} ({scenario}): {card.memory_gib:.2f} GiB planned > {budget:.2f} GiB"
                    f" budget ({', '.join(card.residents)})"
                )
    return PlanReport(plan=plan, demands=demands, placements=placements, errors=errors)


def check_profile(profile: str | Path = "cluster", plan: str | Path | None = None) -> PlanReport:
    """Loads a profile and its plan (serve_config/plans/<profile>.yaml unless given) and checks them."""
    schema = load_profile_for_plan(profile)
    return check(schema, load_plan(plan or plan_path(profile_path(profile))))


def local_node(plan: Plan, hostname: str, addresses: set[str]) -> Node:
    """The plan's node for this machine: by address first, then by host name."""
    for node in plan.nodes:
        if node.address in addresses:
            return node
    for node in plan.nodes:
        if node.name == hostname.split(".")[0]:
            return node
    who = f"this machine ({hostname}, addresses {sorted(addresses)})" if hostname else f"address {sorted(addresses)}"
    raise PlanError(f"{who} matches none of the plan's nodes {[(n.name, n.address) for n in plan.nodes]}")
