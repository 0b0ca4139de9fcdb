"""The rule model: pydantic v2 classes for scan rules as JSON, validated against the catalogue.

A superset of the seed's format: `{"id", "name", "type": "numeric", "metric", "operator",
"value"}` is a valid rule as it stands. Beyond it a rule may compare a metric with another
metric (`"other"`, optionally scaled: `metric op factor * other + offset`), use `between`
(`"value": [lo, hi]`, inclusive), `crosses_above` / `crosses_below` (judged between two
consecutive scan cycles), carry a nested `"condition"` tree of `all` / `any` / `none` groups,
read a closed bar's field some bars back (`{"metric": "close", "bars_ago": 3}`), and restrict
itself with a universe filter, a time-of-day window (America/New_York), a per-symbol cooldown
and an alert mode. `side` (`long` by default, or `short`) says which trade an alert suggests; it
does not change matching, only how a backtest scores the alert (returns inverted for short).

Metric names are the float (`f8`) columns of `CATALOGUE`; an operand with `bars_ago >= 1`
names a bar-history field (`HIST_FIELDS`), `bars_ago = 1` being the last closed bar.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    RootModel,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scanner.rules.limits import (
    CROSS_OPS,
    HHMM,
    MAX_BARS_AGO,
    MAX_LEAVES,
    MAX_RULES,
    MAX_SYMBOLS,
    MAX_TAGS,
    OPERATORS,
    RESERVED_IDS,
    AlertMode,
    FiniteFloat,
    MetricName,
    Operator,
    Ref,
    Severity,
    Side,
    Symbol,
    check_metric,
    check_tree_size,
    comparison_schema,
    ref_name,
    rule_schema,
)

_STRICT = ConfigDict(extra="forbid")


class Operand(BaseModel):
    """A metric as an operand: `{"metric": "vwap"}` or `{"metric": "close", "bars_ago": 3}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bars_ago: int = Field(0, ge=0, le=MAX_BARS_AGO, description="0 = live; k >= 1 = k-th last closed bar.")
    metric: MetricName = Field(description="Catalogue f8 metric (bars_ago 0) or bar-history field (bars_ago >= 1).")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str, info: ValidationInfo) -> str:
        return check_metric(v, int(info.data.get("bars_ago", 0)))

    @property
    def ref(self) -> Ref:
        return (self.metric, self.bars_ago)


def _operand(v: str | Operand) -> Operand:
    return Operand.model_construct(metric=v, bars_ago=0) if isinstance(v, str) else v


class _Leaf(BaseModel):
    """Fields of one comparison; `metric op value` or `metric op factor * other + offset`."""

    model_config = _STRICT

    # bars_ago precedes metric so that the metric's validator sees it
    bars_ago: int = Field(0, ge=0, le=MAX_BARS_AGO, description="Read `metric` this many closed bars back.")
    metric: MetricName | None = Field(None, description="Left operand: a catalogue f8 metric (or history field).")
    operator: Operator | None = None
    value: FiniteFloat | Annotated[list[FiniteFloat], Field(max_length=2)] | None = Field(
        None, description="Constant right operand; [lo, hi] (inclusive) for `between`.")
    other: MetricName | Operand | None = Field(
        None, description="Metric right operand (instead of `value`).")
    factor: FiniteFloat = Field(1.0, description="Scales `other`: metric op factor * other + offset.")
    offset: FiniteFloat = Field(0.0, description="Added to the scaled `other`.")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else check_metric(v, int(info.data.get("bars_ago", 0)))

    @field_validator("other")
    @classmethod
    def _other(cls, v: str | Operand | None) -> str | Operand | None:
        if isinstance(v, str):
            check_metric(v, 0)
        return v

    def _check_leaf(self) -> None:
        """Cross-field shape of a comparison; ValueError names the offending field."""
        op = self.operator
        if op is None:
            raise ValueError(f"'operator' is required with 'metric'; allowed: {', '.join(OPERATORS)}")
        if (self.value is None) == (self.other is None):
            raise ValueError(f"give exactly one of 'value' or 'other' for operator {op!r}")
        scaled = {"factor", "offset"} & self.model_fields_set
        if scaled and self.other is None:
            raise ValueError(f"{' and '.join(sorted(repr(s) for s in scaled))} only apply with 'other'")
        if op == "between":
            v = self.value
            if not isinstance(v, list) or len(v) != 2 or v[0] > v[1]:
                raise ValueError("'value' must be [lo, hi] with lo <= hi for operator 'between'")
        elif isinstance(self.value, list):
            raise ValueError(f"'value' must be a number for operator {op!r} ([lo, hi] is for 'between')")
        if op in CROSS_OPS and (self.bars_ago or (self.other is not None and _operand(self.other).bars_ago)):
            raise ValueError(f"operator {op!r} compares live values of two scan cycles; 'bars_ago' must be 0")

    def leaf_refs(self) -> list[Ref]:
        refs: list[Ref] = [(str(self.metric), self.bars_ago)]
        if self.other is not None:
            refs.append(_operand(self.other).ref)
        return refs

    @property
    def other_operand(self) -> Operand | None:
        return None if self.other is None else _operand(self.other)


class Comparison(_Leaf):
    """One comparison inside a condition tree."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=comparison_schema)

    metric: MetricName = Field(description="Left operand: a catalogue f8 metric (or history field with bars_ago).")
    operator: Operator

    @model_validator(mode="after")
    def _shape(self) -> Comparison:
        self._check_leaf()
        return self


def _condition_kind(v: Any) -> str:
    if isinstance(v, dict):
        return "comparison" if {"metric", "operator"} & v.keys() else "group"
    return "group" if isinstance(v, Group) else "comparison"


Condition = Annotated[
    Union[Annotated[Comparison, Tag("comparison")], Annotated["Group", Tag("group")]],
    Discriminator(_condition_kind),
]


class Group(BaseModel):
    """All of `all`, at least one of `any`, none of `none` (the lists given are AND-ed)."""

    model_config = _STRICT

    all: list[Condition] | None = Field(None, min_length=1, max_length=MAX_LEAVES)
    any: list[Condition] | None = Field(None, min_length=1, max_length=MAX_LEAVES)
    none: list[Condition] | None = Field(None, min_length=1, max_length=MAX_LEAVES)

    @model_validator(mode="after")
    def _some(self) -> Group:
        if self.all is None and self.any is None and self.none is None:
            raise ValueError("a group needs at least one of 'all', 'any', 'none'")
        return self


class Window(BaseModel):
    """Time-of-day window in exchange time (America/New_York); `end` exclusive; wraps past midnight."""

    model_config = _STRICT

    start: str = Field(pattern=HHMM, description="HH:MM, inclusive.")
    end: str = Field(pattern=HHMM, description="HH:MM, exclusive; before `start` = wraps past midnight.")

    @model_validator(mode="after")
    def _nonempty(self) -> Window:
        if self.start == self.end:
            raise ValueError("window 'start' and 'end' must differ")
        return self

    def minutes(self) -> tuple[int, int]:
        """(start, end) as minutes of the day."""
        (h0, m0), (h1, m1) = (map(int, t.split(":")) for t in (self.start, self.end))
        return h0 * 60 + m0, h1 * 60 + m1


class Universe(BaseModel):
    """Which symbols a rule looks at at all."""

    model_config = _STRICT

    min_price: FiniteFloat | None = Field(None, ge=0, description="price >= min_price.")
    max_price: FiniteFloat | None = Field(None, ge=0, description="price <= max_price.")
    min_day_volume: FiniteFloat | None = Field(None, ge=0, description="day_volume >= this.")
    min_avg_daily_volume: FiniteFloat | None = Field(None, ge=0, description="avg_daily_volume >= this.")
    symbols: list[Symbol] | None = Field(None, min_length=1, max_length=MAX_SYMBOLS,
                                         description="Only these symbols (any case).")
    exclude_symbols: list[Symbol] = Field(default_factory=list, max_length=MAX_SYMBOLS,
                                          description="Never these symbols.")

    @model_validator(mode="after")
    def _range(self) -> Universe:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("'min_price' must be <= 'max_price'")
        return self

    def bounds(self) -> list[tuple[str, str, float]]:
        """The numeric filters as (metric, operator, value) comparisons."""
        out = []
        for name, metric, op in (("min_price", "price", ">="), ("max_price", "price", "<="),
                                 ("min_day_volume", "day_volume", ">="),
                                 ("min_avg_daily_volume", "avg_daily_volume", ">=")):
            v = getattr(self, name)
            if v is not None:
                out.append((metric, op, float(v)))
        return out

class Rule(_Leaf):
    """One scan rule: a single top-level comparison (the seed's format) or a `condition` tree."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=rule_schema)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
                    description=f"Unique; not {' or '.join(sorted(RESERVED_IDS))} (paths of the API).")
    name: str = Field("", max_length=200, description="Display name; defaults to the id.")
    type: Literal["numeric", "condition"] | None = Field(
        None, description="'numeric' = top-level comparison, 'condition' = condition tree; inferred.")
    description: str = Field("", max_length=2000)
    enabled: bool = True
    severity: Severity = "info"
    tags: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(default_factory=list,
                                                                           max_length=MAX_TAGS)
    alert_mode: AlertMode = Field("enter", description=(
        "enter: when a symbol starts matching; enter_exit: also when it stops; "
        "once_per_bar / once_per_day: at most once per 1-minute bar / trading day while matching."))
    cooldown_seconds: FiniteFloat = Field(0.0, ge=0, le=604800, description="Quiet time per (rule, symbol).")
    side: Side = Field("long", description="The trade an alert suggests: a backtest inverts returns for 'short'.")
    window: Window | None = None
    universe: Universe | None = None
    condition: Condition | None = None

    _tree: Comparison | Group | None = PrivateAttr(None)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_IDS:
            raise ValueError(f"id {v!r} is reserved (GET /api/rules/{v} is another endpoint)")
        return v

    @field_validator("condition", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return check_tree_size(v)

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        leaf = self.metric is not None
        if leaf == (self.condition is not None):
            raise ValueError("a rule needs either 'metric' + 'operator' + 'value'/'other' or a 'condition' "
                             "tree (not both)")
        if not leaf and self.model_fields_set & {"bars_ago", "operator", "value", "other", "factor",
                                                 "offset"}:
            raise ValueError("with 'condition', put comparison fields inside the tree")
        kind = "numeric" if leaf else "condition"
        if self.type is not None and self.type != kind:
            has = "a metric" if leaf else "a condition"
            raise ValueError(f"'type' is {self.type!r} but the rule has {has}; "
                             f"allowed: 'numeric' (top-level metric) or 'condition' (tree)")
        self.type = kind
        if leaf:
            self._check_leaf()
        self.name = self.name or self.id
        self.tree()  # built now, so that equal rules compare equal
        return self

    def tree(self) -> Comparison | Group:
        """The rule's condition as a tree (a top-level comparison becomes one Comparison)."""
        if self._tree is None:
            self._tree = self.condition if self.condition is not None else Comparison.model_construct(
                bars_ago=self.bars_ago, metric=self.metric, operator=self.operator, value=self.value,
                other=self.other, factor=self.factor, offset=self.offset)
        return self._tree

    def refs(self) -> list[Ref]:
        """Operands the rule reads, in order of appearance (tree, then universe), without repeats."""
        out: list[Ref] = []

        def walk(node: Comparison | Group) -> None:
            if isinstance(node, Group):
                for part in (node.all, node.any, node.none):
                    for child in part or ():
                        walk(child)
            else:
                out.extend(node.leaf_refs())

        walk(self.tree())
        if self.universe is not None:
            out.extend((m, 0) for m, _, _ in self.universe.bounds())
        return list(dict.fromkeys(out))

    def dump(self) -> dict[str, Any]:
        """JSON-able dict without defaults (what the rule store writes), id and name first."""
        d = self.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        return {"id": self.id, "name": self.name, "type": self.type} | d

    def signature(self) -> dict[str, Any]:
        """What decides the rule's matches and alerts (dump without the display fields)."""
        return {k: v for k, v in self.dump().items() if k not in ("name", "description", "severity", "tags", "side")}


Group.model_rebuild()
Comparison.model_rebuild()
Rule.model_rebuild()


class RuleSet(RootModel[Annotated[list[Rule], Field(max_length=MAX_RULES)]]):
    """A list of rules with unique ids (the rule store's file), at most MAX_RULES."""

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        seen: set[str] = set()
        dup = [r.id for r in self.root if r.id in seen or seen.add(r.id)]
        if dup:
            raise ValueError(f"duplicate rule id(s): {', '.join(sorted(set(dup)))}")
        return self


def rule_metric_names(rule: Rule) -> list[str]:
    """Names of the values an alert of this rule carries (`ALERT_DTYPE.values`), in order."""
    from scanner.records import ALERT_VALUES  # here, not at the top: the rule model loads without numpy

    return [ref_name(r) for r in rule.refs()[:ALERT_VALUES]]


def parse_rules(data: str | bytes | list[Any] | dict[str, Any]) -> list[Rule]:
    """Rules from JSON text or parsed JSON: a list, `{"rules": [...]}`, or one rule object.
    Raises pydantic.ValidationError (json.JSONDecodeError for malformed text)."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)  # RecursionError on input nested ~1,000 deep: see store.validate
    if isinstance(data, dict):
        data = data["rules"] if "rules" in data and "id" not in data else [data]
    return RuleSet.model_validate(data).root


def rule_json_schema() -> dict[str, Any]:
    """JSON Schema of one rule."""
    return Rule.model_json_schema()


def ruleset_json_schema() -> dict[str, Any]:
    """JSON Schema of a rule list."""
    return RuleSet.model_json_schema()
