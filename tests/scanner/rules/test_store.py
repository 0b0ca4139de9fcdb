"""Rule store: round trips, in-place replace, locking across processes, the default pack."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from scanner.rules.compiler import compile_rules
from scanner.rules.model import Rule
from scanner.rules.store import RuleStore, RuleStoreError, default_pack, install_default_pack, validate


def rule(rid: str, value: float = 1.0) -> dict[str, object]:
    return {"id": rid, "name": rid.upper(), "metric": "price", "operator": ">", "value": value}


def test_add_list_remove_round_trip(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    store = RuleStore.in_dir(tmp_path / "data", on_change=lambda rules: seen.append([r.id for r in rules]))
    assert store.list() == []
    store.add(rule("a"))
    store.add(rule("b"))
    stored = store.add(rule("c"))
    assert isinstance(stored, Rule) and [r.id for r in store.list()] == ["a", "b", "c"]
    store.add(rule("b", 99.0))  # replace by id, in place (alert records refer to positions)
    assert [(r.id, r.value) for r in store.list()] == [("a", 1.0), ("b", 99.0), ("c", 1.0)]
    assert store.get("b") is not None and store.get("zz") is None
    assert store.remove("a") is True and store.remove("a") is False
    assert [r.id for r in store.list()] == ["b", "c"]
    assert seen == [["a"], ["a", "b"], ["a", "b", "c"], ["a", "b", "c"], ["b", "c"]]
    on_disk = json.loads((tmp_path / "data" / "rules.json").read_text())
    assert [r["id"] for r in on_disk] == ["b", "c"] and on_disk[0]["value"] == 99.0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["rules.json", "rules.json.lock"]


def test_invalid_input_is_refused_and_nothing_written(tmp_path: Path) -> None:
    store = RuleStore(tmp_path / "rules.json")
    store.add(rule("a"))
    before = store.path.read_text()
    with pytest.raises(RuleStoreError, match="unknown metric 'nope'"):
        store.add({"id": "x", "metric": "nope", "operator": ">", "value": 1})
    with pytest.raises(RuleStoreError, match="duplicate rule id"):
        store.replace_all([rule("d"), rule("d")])
    assert store.path.read_text() == before
    assert validate(json.dumps([rule("q")]))[0].id == "q"
    with pytest.raises(RuleStoreError, match="not JSON"):
        validate("[{")
    store.path.write_text('{"id": "broken"')
    with pytest.raises(RuleStoreError, match="rules.json.*not JSON"):
        store.list()
    store.path.write_text('{"id": "not-a-list"}')
    with pytest.raises(RuleStoreError, match="expected a JSON list"):
        store.list()


def deep(depth: int) -> dict[str, object]:
    node: dict[str, object] = {"metric": "price", "operator": ">", "value": 1}
    for _ in range(depth - 1):
        node = {"all": [node]}
    return node


def test_a_bad_stored_item_never_breaks_a_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Items the model refuses (a 200-deep tree stored by an older version, garbage, a duplicate)
    are skipped and reported; the good ones still read, in order; the next write drops the bad."""
    store = RuleStore(tmp_path / "rules.json")
    items = [rule("a"), {"id": "deep", "condition": deep(200)}, "garbage", {"id": "broken"}, rule("a", 2.0),
             rule("b"), {"id": "nan", "metric": "price", "operator": ">", "value": float("nan")}]
    store.path.write_text(json.dumps(items))
    rules, problems = store.read()
    assert [(r.id, r.value) for r in rules] == [("a", 1.0), ("b", 1.0)]
    assert len(problems) == 5 and "item 1 (id 'deep')" in problems[0] and "32 levels" in problems[0]
    assert "duplicate" in problems[3] and all("\n" not in p for p in problems)
    assert [r.id for r in store.list()] == ["a", "b"]
    assert "skipped invalid item 1 (id 'deep')" in caplog.text
    store.add(rule("c"))
    assert [r["id"] for r in json.loads(store.path.read_text())] == ["a", "b", "c"]
    assert "dropping invalid item 1 (id 'deep')" in caplog.text


def test_a_file_too_deep_for_json_is_an_error_not_a_crash(tmp_path: Path) -> None:
    text = '{"all": [' * 5000 + '{"metric": "price", "operator": ">", "value": 1}' + "]}" * 5000
    with pytest.raises(RuleStoreError, match="nested too deeply"):
        validate(f'[{{"id": "x", "condition": {text}}}]')
    store = RuleStore(tmp_path / "rules.json")
    store.path.write_text(f'[{{"id": "x", "condition": {text}}}]')
    with pytest.raises(RuleStoreError, match="nested too deeply"):
        store.list()


def test_replace_all(tmp_path: Path) -> None:
    store = RuleStore(tmp_path / "rules.json")
    store.add(rule("a"))
    got = store.replace_all([rule("x"), rule("y")])
    assert [r.id for r in got] == [r.id for r in store.list()] == ["x", "y"]


def _writer(path: str, prefix: str, n: int) -> None:
    store = RuleStore(path)
    for i in range(n):
        store.add(rule(f"{prefix}{i}"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "rules.json")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p, 15)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = {r.id for r in RuleStore(path).list()}
    assert ids == {f"{p}{i}" for p in "abc" for i in range(15)}


def test_default_pack_validates_and_compiles(tmp_path: Path) -> None:
    pack = default_pack()
    assert len(pack) >= 15 and len({r.id for r in pack}) == len(pack)
    ops = {n.operator for r in pack for n in _leaves(r)}
    assert {"crosses_above", "crosses_below", ">", "<", "between"} <= ops
    assert {r.alert_mode for r in pack} == {"enter", "enter_exit", "once_per_bar", "once_per_day"}
    comp = compile_rules(pack, ["AAPL", "MSFT"])
    assert ("close", 3) in comp.hist_refs
    path = tmp_path / "rules.json"
    assert install_default_pack(path) is True
    assert [r.id for r in RuleStore(path).list()] == [r.id for r in pack]
    RuleStore(path).remove(pack[0].id)
    assert install_default_pack(path) is False  # never overwrites a store that exists
    assert len(RuleStore(path).list()) == len(pack) - 1


def _leaves(r: Rule) -> list:  # type: ignore[type-arg]
    from scanner.rules.model import Comparison, Group

    def walk(t: Comparison | Group) -> list[Comparison]:
        if isinstance(t, Comparison):
            return [t]
        return [c for part in (t.all, t.any, t.none) for x in part or () for c in walk(x)]

    return walk(r.tree())
