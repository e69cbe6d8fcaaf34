# SPDX-License-Identifier: MIT
"""The rendezvous state machine (ringstore._protocol), without sockets or sleeps.

Every test drives Join/Member generators over sim.py's in-memory store with
TCPStore semantics and a virtual clock: a seed is one interleaving, so each
outcome is exact and no assertion depends on timing. Store restarts are
simulated the way the protocol's model states them: every connection breaks,
and the store comes back with a prefix of its history (everything but the
last ``lag`` seconds). The handler's glue (threads, the real client, the
real servers) is tested in test_handler.py and test_torchrun.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ringstore._protocol import (
    FINAL, STATES, TABLE, Beat, Closed, Config, Keys, LastCall, Result, TimedOut, chart,
)
from sim import Sim

README = Path(__file__).resolve().parents[2] / "docs" / "rendezvous.md"


def cfg(nmin, nmax, **kw) -> Config:
    base = dict(join_timeout=600.0, last_call=60.0, interval=1.0, dead_after=3.0,
                commit_wait=2.0)
    base.update(kw)
    return Config(nmin, nmax, **base)


def until_members(sim, nodes, n=1, limit=600.0):
    sim.run(limit, stop=lambda: all(len(x.memberships) >= n for x in nodes))
    bad = [(x.name, x.error) for x in nodes if x.error]
    assert not bad, bad
    assert all(len(x.memberships) >= n for x in nodes), [
        (x.name, x.memberships, x.joins[-1].trace[-8:] if x.joins else None) for x in nodes]


def beat(ts, who="ghost 1 0 x", status="up", seq=1) -> str:
    return Beat(status, ts, seq, who).encode()


# --------------------------------------------------------------- rounds
def test_exact_ranks_and_world():
    sim = Sim(seed=1)
    nodes = [sim.node("exact", cfg(48, 48), start=i * 0.001) for i in range(48)]
    until_members(sim, nodes)
    assert sorted(x.memberships[0][1] for x in nodes) == list(range(48))
    assert {(x.memberships[0][0], x.memberships[0][2]) for x in nodes} == {(0, 48)}
    sim.check_rounds()


def test_overflow_forms_consecutive_rounds_no_node_twice():
    """48 concurrent nodes, max 16, long last call: arrivals beyond max move
    on, so rounds 0, 1, 2 each close full; every node is in exactly one round
    and each round's ranks are exactly 0..15."""
    sim = Sim(seed=2)
    nodes = [sim.node("waves", cfg(4, 16), start=0.0) for _ in range(48)]
    until_members(sim, nodes)
    by_round = sim.check_rounds()
    assert sorted(r for _, r in by_round) == [0, 1, 2]
    assert [sim.get(f"rdzv/waves/{r}/done") for r in range(3)] == [b"16"] * 3
    assert sim.get("rdzv/waves/3/n") is None  # nobody went past round 2


def test_last_call_closes_with_min_to_max_nodes():
    sim = Sim(seed=3)
    nodes = [sim.node("lastcall", cfg(3, 10, last_call=0.5), start=i * 0.01) for i in range(5)]
    until_members(sim, nodes)
    assert sorted(x.memberships[0][1] for x in nodes) == list(range(5))
    assert {x.memberships[0][2] for x in nodes} == {5}


def test_late_joiner_waits_for_next_round():
    """Round 0 forms with 8 of max 9. A 9th node arriving later is counted in
    round 1, the members see it (num_nodes_waiting() > 0) and re-join, and
    round 1 closes with all 9; the late node arrived first, so it is rank 0."""
    sim = Sim(seed=4)
    c = cfg(8, 9, last_call=0.5)
    members = [sim.node("late", c, start=i * 0.01) for i in range(8)]
    until_members(sim, members)
    assert {x.memberships[0][:1] for x in members} == {(0,)}
    late = sim.node("late", c, start=5.0)
    until_members(sim, members + [late], n=1)
    until_members(sim, members, n=2)
    sim.check_rounds()
    assert {x.memberships[-1][0] for x in members + [late]} == {1}
    assert late.memberships[0][:3] == (1, 0, 9)
    assert sim.get("rdzv/late/1/done") == b"9"


def test_full_round_does_not_count_redundant_nodes():
    """A third node beyond max waits in round 1; the members of the full
    round 0 do not re-join for it (torch's redundancy list), and it learns
    that the rendezvous closed."""
    sim = Sim(seed=5)
    c = cfg(2, 2, interval=0.2)
    members = [sim.node("full", c) for _ in range(2)]
    until_members(sim, members)
    extra = sim.node("full", c, start=1.0)
    sim.run(30)
    assert sim.get("rdzv/full/1/n") == b"1"
    assert [len(x.memberships) for x in members] == [1, 1]
    sim.put("rdzv/full/closed", "1")
    sim.run(30, stop=lambda: extra.finished)
    assert isinstance(extra.error, Closed)


def test_dead_arrivals_are_excluded():
    """Arrival 1 has a stale heartbeat, arrival 2 died before its first one;
    the round closes with the two live nodes as ranks 0 and 1."""
    sim = Sim(seed=6)
    sim.put("rdzv/dead/0/n", 2)
    sim.put("rdzv/dead/0/hb/1", beat(1.0))
    c = cfg(2, 8, last_call=0.5, interval=0.2, dead_after=0.4)
    nodes = [sim.node("dead", c) for _ in range(2)]
    until_members(sim, nodes)
    assert sorted(x.memberships[0][1:3] for x in nodes) == [(0, 2), (1, 2)]
    assert sim.get("rdzv/dead/0/done") == b"4 1,2"


def test_closer_dies_another_node_takes_over():
    """The node that set the last call (arrival 2 = min) vanished; after the
    deadline plus the dead time another node takes the lease and closes."""
    sim = Sim(seed=7)
    sim.put("rdzv/takeover/0/n", 2)
    sim.put("rdzv/takeover/0/hb/1", beat(1.0))
    sim.put("rdzv/takeover/0/hb/2", beat(1.0, who="ghost 2 0 y"))
    sim.put("rdzv/takeover/0/lc", LastCall(sim.now, 2).encode())
    nodes = [sim.node("takeover", cfg(2, 8, interval=0.2, dead_after=0.4)) for _ in range(2)]
    until_members(sim, nodes)
    assert sorted(x.memberships[0][1:3] for x in nodes) == [(0, 2), (1, 2)]
    assert sim.get("rdzv/takeover/0/done") == b"4 1,2"


def test_set_closed_wakes_waiters_and_rejects_newcomers():
    sim = Sim(seed=8)
    c = cfg(2, 2, interval=0.2)
    waiting = sim.node("closing", c)
    sim.at(5.0, lambda: sim.put("rdzv/closing/closed", "1"))
    sim.run(30, stop=lambda: waiting.finished)
    assert isinstance(waiting.error, Closed)
    assert sim.get("rdzv/closing/0/hb/1").startswith(b"left ")
    late = sim.node("closing", c)
    sim.run(30, stop=lambda: late.finished)
    assert isinstance(late.error, Closed)
    assert late.joins[0].trace == [("START", "closed")]


def test_join_timeout():
    sim = Sim(seed=9)
    node = sim.node("alone", cfg(2, 2, join_timeout=1.0, interval=0.2))
    sim.run(30, stop=lambda: node.finished)
    assert isinstance(node.error, TimedOut)
    assert sim.get("rdzv/alone/0/hb/1").startswith(b"left ")


def test_round_hint_catches_up():
    """A closer died between its done and its hint update: the hint says 0
    while round 0 is closed. Newcomers pass through round 0 (late there),
    form round 1, and its closer moves the hint from 0 straight to 2."""
    sim = Sim(seed=10)
    sim.put("rdzv/hint/round", 0)
    sim.put("rdzv/hint/0/n", 2)
    sim.put("rdzv/hint/0/done", "2")
    nodes = [sim.node("hint", cfg(2, 2)) for _ in range(2)]
    until_members(sim, nodes)
    assert sorted(x.memberships[0][:2] for x in nodes) == [(1, 0), (1, 1)]
    assert sim.get("rdzv/hint/round") == b"2"


def test_result_values_round_trip():
    assert Result.parse(b"4 1,2").member(3) == (0, 2)
    assert Result.parse(Result(4, (2, 1)).encode()) == Result(4, (1, 2))
    assert Result.parse(b"3").member(4) is None
    b = Beat("up", 12.5, 7, "host 1 2 ab")
    assert Beat.parse(b.encode().encode()) == b
    assert Keys("j").round_of("rdzv/j/12/worker/default_pg/0//marker/1") == 12
    assert Keys("j").round_of("rdzv/j/1/0/n") is None  # run "j/1", not round 1 of "j"
    assert Keys("j").round_of("rdzv/j/round") is None


def test_a_node_in_a_collected_round_moves_on():
    """A slow node still waiting in a round that was collected under it
    (gc moved past it) moves on at its close turn instead of closing it."""
    sim = Sim(seed=20)
    node = sim.node("slow", cfg(1, 4, last_call=5.0))
    sim.at(1.0, lambda: sim.put("rdzv/slow/gc", 3))
    until_members(sim, [node])
    assert ("CLOSE", "collected") in node.joins[0].trace
    assert node.memberships[0][:3] == (3, 0, 1)


def test_a_result_that_vanishes_before_commit_is_read_again():
    """done disappears during the commit wait without a restart (deleted by
    hand): the node does not act on it, re-reads and closes again."""
    sim = Sim(seed=21)
    node = sim.node("vanish", cfg(1, 1, last_call=1.0))
    sim.before(node, lambda op: op.kind == "check" and op.args[0][0].endswith("/0/done"),
               lambda: sim.store._write("rdzv/vanish/0/done", None))
    until_members(sim, [node])
    assert ("COMMIT", "vanished") in node.joins[0].trace
    assert node.memberships[0][:3] == (0, 0, 1)


def test_a_slot_taken_by_another_owner_is_left_for_a_new_arrival():
    """A waiter's heartbeat finds its slot holding another node's value: it
    is not its slot any more, so it arrives again instead of beating over
    it."""
    sim = Sim(seed=22)
    c = cfg(2, 3)
    a = sim.node("stolen", c)
    sim.at(2.0, lambda: sim.put("rdzv/stolen/0/hb/1", beat(sim.now, who="other 9 9 z")))
    sim.run(10)
    assert ("WAIT", "taken") in a.joins[0].trace
    assert a.joins[0].a == 2
    b = sim.node("stolen", c)
    until_members(sim, [a, b])
    sim.check_rounds()


def test_moving_on_finds_the_rendezvous_closed():
    sim = Sim(seed=23)
    sim.put("rdzv/nextclosed/0/n", 1)  # round 0 is full (max 1)
    node = sim.node("nextclosed", cfg(1, 1))
    sim.before(node, lambda op: op.kind == "add" and op.args[1] == 1,
               lambda: sim.put("rdzv/nextclosed/closed", "1"))
    sim.run(30, stop=lambda: node.finished)
    assert isinstance(node.error, Closed)
    assert node.joins[0].trace[-2:] == [("ARRIVE", "full"), ("NEXT", "closed")]


def test_a_restart_while_moving_on_revalidates():
    sim = Sim(seed=24)
    sim.put("rdzv/nextrestart/0/n", 1)  # round 0 is full (max 1)
    node = sim.node("nextrestart", cfg(1, 1, last_call=0.5))
    checks = iter(range(10))
    sim.lose_reply(node, lambda op: op.kind == "check" and op.args[0][0].endswith("/closed")
                   and next(checks) == 1)  # the second CHECK closed: NEXT's
    until_members(sim, [node])
    assert ("NEXT", "restarted") in node.joins[0].trace
    assert node.memberships[0][:3] == (1, 0, 1)


def test_join_timeout_passes_while_the_store_is_down():
    sim = Sim(seed=25)
    node = sim.node("downlong", cfg(2, 2, join_timeout=1.0, interval=0.2))
    sim.crash(at=0.5, down=2.0, lag=0.0)
    sim.run(30, stop=lambda: node.finished)
    assert isinstance(node.error, TimedOut)
    assert ("REVALIDATE", "deadline") in node.joins[0].trace


# ------------------------------------------------------------- restarts
def test_counter_rollback_hands_a_number_out_twice_but_one_slot_owner():
    """A restart rolls the arrival counter back to before A's ADD: B gets
    A's number 1. Only one of them owns slot 1 (COMPARE_SET from empty); the
    other finds it taken or void, arrives again, and the round has two
    distinct ranks, whatever the interleaving."""
    for seed in range(20):
        sim = Sim(seed=seed)
        c = cfg(2, 2)
        a = sim.node("twice", c)
        sim.run(5, stop=lambda: sim.get("rdzv/twice/0/hb/1") is not None)
        assert sim.get("rdzv/twice/0/n") == b"1"
        sim.crash_to(keep_until=a.start, down=0.5)  # A's ADD and claim are lost
        b = sim.node("twice", c, start=0.6)
        until_members(sim, [a, b])
        sim.check_rounds()
        assert sorted(x.memberships[0][1:3] for x in (a, b)) == [(0, 2), (1, 2)]
        events = [e for x in (a, b) for j in x.joins for _, e in j.trace]
        assert "taken" in events or "lost" in events, (seed, events)


def test_two_nodes_given_one_number_one_owns_the_slot():
    """The counter goes back after A claimed slot 1, so B is handed 1 too.
    B's claim (COMPARE_SET from empty) fails on A's value: B arrives again,
    and the ranks differ."""
    sim = Sim(seed=26)
    c = cfg(2, 3, last_call=0.5)
    a = sim.node("samenumber", c)
    sim.before(a, lambda op: op.kind == "compare_set" and op.args[0].endswith("/hb/1"),
               lambda: sim.put("rdzv/samenumber/0/n", 0))
    sim.run(5, stop=lambda: sim.get("rdzv/samenumber/0/hb/1") is not None)
    b = sim.node("samenumber", c)
    until_members(sim, [a, b])
    assert ("CLAIM", "taken") in b.joins[0].trace
    assert (a.joins[0].a, b.joins[0].a) == (1, 2)
    sim.check_rounds()


def test_members_leaving_together_collect_their_round():
    """A job's nodes shut down together. The first one out collects while
    the others are still members, so it must leave their round; the others
    mark their slots left while it still holds the collection lease. The
    last one out waits for the lease instead of skipping, and collects."""
    sim = Sim(seed=27)
    c = cfg(3, 3, interval=0.5, dead_after=1.5)
    nodes = [sim.node("together", c) for _ in range(3)]
    until_members(sim, nodes)
    first, rest = nodes[0], nodes[1:]
    first.leave_at = sim.now
    for n in rest:
        n.leave_at = sim.now + 1.0
    # the first collector's lease release comes after the others left
    sim.delay(first, lambda op: op.kind == "compare_set" and op.args[0].endswith("gclease")
              and op.args[2] == "", 3.0)
    sim.run(60, stop=lambda: all(n.finished for n in nodes))
    assert run_keys(sim, "together") <= {"round", "gc", "gclease"}, sorted(
        run_keys(sim, "together"))


def test_a_full_round_with_too_few_live_arrivals_is_void():
    """Round 0 is full (max 2) but arrival 1 is dead: nobody else can arrive
    in it, so instead of waiting for nobody its closer voids it (every
    arrival dead), and the live node forms round 1 with the next one."""
    sim = Sim(seed=28)
    sim.put("rdzv/void/0/n", 1)
    sim.put("rdzv/void/0/hb/1", beat(1.0))
    c = cfg(2, 2, interval=0.2, dead_after=0.4)
    a = sim.node("void", c)
    b = sim.node("void", c, start=2.0)
    until_members(sim, [a, b])
    assert sim.get("rdzv/void/0/done") == b"2 1,2"
    assert sorted(x.memberships[0][:3] for x in (a, b)) == [(1, 0, 2), (1, 1, 2)]


def test_lost_arrival_reply_is_not_resent():
    """A's arrival ADD is applied but its reply is lost: A does not send it
    again (it might count twice); it arrives anew, and its first number is a
    slot nobody claims, dead at the close."""
    sim = Sim(seed=11)
    c = cfg(2, 3, interval=0.2, dead_after=0.4)
    a = sim.node("lostadd", c)
    sim.lose_reply(a, lambda op: op.kind == "add" and op.args[1] == 1)
    sim.run(5, stop=lambda: sim.get("rdzv/lostadd/0/hb/2") is not None)
    b = sim.node("lostadd", c)
    until_members(sim, [a, b])
    assert sim.get("rdzv/lostadd/0/n") == b"3"  # 2 arrivals of A, 1 of B: no re-send
    assert sim.get("rdzv/lostadd/0/done") == b"3 1"
    assert sorted(x.memberships[0][1:3] for x in (a, b)) == [(0, 2), (1, 2)]
    assert ("ARRIVE", "restarted") in a.joins[0].trace
    assert ("REVALIDATE", "no_slot") in a.joins[0].trace


def test_lost_claim_reply_is_resolved_by_reading():
    """The claim's COMPARE_SET was applied but its reply lost: REVALIDATE's
    COMPARE_SET from the value A meant to write finds it, and A keeps its
    slot (no second arrival)."""
    sim = Sim(seed=12)
    c = cfg(2, 2)
    a = sim.node("lostcas", c)
    sim.lose_reply(a, lambda op: op.kind == "compare_set" and op.args[1] == "")
    b = sim.node("lostcas", c, start=1.0)
    until_members(sim, [a, b])
    assert sim.get("rdzv/lostcas/0/n") == b"2"
    assert ("CLAIM", "restarted") in a.joins[0].trace
    assert ("REVALIDATE", "waiting") in a.joins[0].trace
    assert a.memberships[0][1:3] == (0, 2)


def test_lost_result_reply_is_resolved_by_reading():
    """The closer's COMPARE_SET of done is lost: it reads done back."""
    sim = Sim(seed=13)
    c = cfg(2, 2)
    a = sim.node("lostdone", c)
    b = sim.node("lostdone", c, start=1.0)
    sim.lose_reply(b, lambda op: op.kind == "compare_set" and op.args[0].endswith("/done"))
    until_members(sim, [a, b])
    assert ("CLOSE", "restarted") in b.joins[0].trace
    assert ("REVALIDATE", "done") in b.joins[0].trace
    sim.check_rounds()


def scenario(seed: int, commit_wait: float, lag: float = 1.0, lose: bool = True) -> Sim:
    """Up to 9 nodes (max 6) arriving over 3 s; store crashes (each losing
    up to `lag` seconds of writes): 0-2 at random in the first 8 s, and one
    aimed at the hazard, within half a second after the first result is
    written; half the nodes re-joining after a restart (their workers used
    the store), and lost replies of two kinds of request per node."""
    sim = Sim(seed=seed)
    rng = sim.rng
    c = cfg(3, 6, join_timeout=10000.0, last_call=rng.choice([1.5, 2.5, 4.0]),
            interval=0.5, commit_wait=commit_wait)
    for _ in range(rng.randint(3, 9)):
        sim.node("prop", c, start=rng.uniform(0, 3), rejoin_on_restart=rng.random() < 0.5)
    for _ in range(rng.randint(0, 2)):
        sim.crash(at=rng.uniform(0.5, 8), down=rng.uniform(0.05, 1.5), lag=lag)
    aimed = []

    def after_a_result():
        if not aimed:
            aimed.append(sim.now)
            sim.crash(at=rng.uniform(0.0, 0.5), down=rng.uniform(0.05, 1.5), lag=lag)
    for n in sim.nodes:
        sim.before(n, lambda op: op.kind == "compare_set" and op.args[0].endswith("/done"),
                   after_a_result)
    if lose:
        for n in sim.nodes:
            for kind in rng.sample(["add", "compare_set", "wait", "check"], 2):
                sim.lose_reply(n, kind)
    sim.run(200)
    return sim


@pytest.mark.timeout_s(300)
def test_restarts_that_lose_writes_never_split_a_round():
    """Random restarts that lose up to a second of writes, and lost replies:
    every round's members saw one result, with distinct ranks, and every
    member it lists finished (no wrong world size), because nobody acts on a
    result before it is commit_wait (>= the loss window) old on an unbroken
    connection."""
    for seed in range(120):
        sim = scenario(seed, commit_wait=1.0)
        assert not [n.error for n in sim.nodes if n.error], seed
        try:
            sim.check_rounds()
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {e}") from None


@pytest.mark.timeout_s(300)
def test_without_commit_wait_restarts_do_split_rounds():
    """The control for the test above: the same kind of runs with
    commit_wait=0 hand out duplicate ranks or disagreeing results, so the
    scenarios do reach the hazard that commit_wait removes."""
    broken = []
    for seed in range(120):
        sim = scenario(seed, commit_wait=0.0, lose=False)
        try:
            sim.check_rounds()
        except AssertionError as e:
            broken.append((seed, str(e)[:120]))
            break
    assert broken, "no run broke an invariant: the scenarios are too weak"


def test_members_republish_after_the_store_lost_everything():
    """A store without a write log comes back empty. The members of round 0
    re-publish their slots, the round's result and the hint when they
    reconnect, so a node that arrives afterwards goes to round 1, not to a
    new round 0."""
    sim = Sim(seed=14)
    c = cfg(2, 3, last_call=0.5)
    members = [sim.node("empty", c, start=i * 0.01) for i in range(2)]
    until_members(sim, members)
    done = sim.get("rdzv/empty/0/done")
    sim.crash_to(keep_until=0.0, down=0.5)  # everything lost
    sim.run(5)
    assert sim.get("rdzv/empty/0/done") == done
    assert int(sim.get("rdzv/empty/round")) >= 1
    assert all(sim.get(f"rdzv/empty/0/hb/{i}") is not None for i in (1, 2))
    newcomer = sim.node("empty", c)
    sim.run(30, stop=lambda: newcomer.joins and newcomer.joins[0].a is not None)
    assert (newcomer.joins[0].r, newcomer.joins[0].a) == (1, 1)


# ----------------------------------------------------------- collection
def run_keys(sim, run) -> set[str]:
    base = f"rdzv/{run}/"
    return {k[len(base):] for k in sim.store.run_keys(run)}


def test_keys_stay_bounded_over_many_rounds():
    """An elastic soak: 30 rounds while nodes join, leave (shutdown) and
    die. Each round leaves N slots plus agents' and workers' keys; the
    closers collect round r-2 when round r closes, so the run ends with the
    keys of the last rounds only, not O(rounds x N). When the rest leave,
    the last one out collects the rest: O(1) keys remain."""
    sim = Sim(seed=15)
    c = cfg(2, 64, last_call=0.5, interval=0.5, dead_after=1.5)
    run = "soak"
    keys = Keys(run)

    def agent_and_worker_keys():  # what torchrun's agents and workers write
        for n in sim.nodes:
            if n.member is not None and not n.finished:
                r = n.member.r
                sim.put(f"{keys.agent(r)}/torchelastic/role_info/{n.member.rank}", "x")
                sim.put(f"{keys.worker(r)}/default_pg/0//marker/{n.member.rank}", "1")
    nodes = [sim.node(run, c, start=0.0) for _ in range(3)]
    rounds_seen = 0
    for step in range(30):
        start_round = max((n.memberships[-1][0] for n in sim.nodes if n.memberships), default=-1)
        kind = step % 3
        if kind == 0:  # one joins
            nodes.append(sim.node(run, c))
        elif kind == 1:  # one leaves cleanly, one joins
            live = [n for n in nodes if n.member is not None and n.leave_at is None]
            live[0].leave_at = sim.now
            nodes.append(sim.node(run, c))
        else:  # one dies, one joins
            live = [n for n in nodes if n.member is not None and n.die_at is None
                    and n.leave_at is None]
            live[0].die_at = sim.now
            nodes.append(sim.node(run, c))
        sim.run(60, stop=lambda: max((n.memberships[-1][0] for n in sim.nodes if n.memberships),
                                     default=-1) > start_round
                and all(n.member is not None for n in sim.nodes
                        if not n.finished and n.leave_at is None and n.die_at is None))
        agent_and_worker_keys()
        rounds_seen = max(n.memberships[-1][0] for n in sim.nodes if n.memberships)
    assert not [n.error for n in sim.nodes if n.error]
    sim.check_rounds(quiescent=False)
    assert rounds_seen >= 20
    live = [n for n in sim.nodes if not n.finished and n.member is not None]
    n_live = len(live)
    per_round = {}
    for k in run_keys(sim, run):
        head = k.split("/", 1)[0]
        if head.isdigit():
            per_round[int(head)] = per_round.get(int(head), 0) + 1
    # the rounds not yet collected: the last two, plus any a dead node's
    # fresh slot still holds (its heartbeat goes stale one dead time later)
    assert len(per_round) <= 4, sorted(per_round)
    assert min(per_round) >= rounds_seen - 3
    # O(N): a round holds n, lc, lease, done and, per member, a slot, the
    # agent's and the worker's keys
    n_max = max(world for n in sim.nodes for _, _, world, _ in n.memberships)
    assert len(run_keys(sim, run)) <= 4 * (3 * n_max + 4) + 4
    # not O(rounds x N): a small part of what the run wrote
    written = {k for _, k, _ in sim.store.history if k.startswith(f"rdzv/{run}/")}
    assert len(run_keys(sim, run)) * 4 < len(written), (len(run_keys(sim, run)), len(written))
    # and now everyone leaves: the last one out collects everything
    for n in live:
        n.leave_at = sim.now
    sim.run(60, stop=lambda: all(n.finished for n in live))
    sim.run(c.dead_after + 1)  # dead nodes' slots go stale...
    tail = [sim.node(run, c, rounds_wanted=1) for _ in range(2)]  # a last round
    sim.run(60, stop=lambda: all(x.finished for x in tail))
    assert run_keys(sim, run) <= {"round", "gc", "gclease", "closed"}, sorted(run_keys(sim, run))
    assert n_live >= 2


def test_collection_spares_a_round_whose_members_live():
    """Extra nodes beyond max form rounds of their own while round 0's
    members still run; round 0 is never collected under them, however many
    rounds close after it."""
    sim = Sim(seed=16)
    c = cfg(2, 2, interval=0.5, dead_after=1.5)
    first = [sim.node("spare", c) for _ in range(2)]
    until_members(sim, first)
    for _ in range(4):  # rounds 1..4, each of two nodes that then leave
        pair = [sim.node("spare", c, rounds_wanted=1) for _ in range(2)]
        sim.run(60, stop=lambda: all(x.finished for x in pair))
    assert max(x.memberships[0][0] for x in sim.nodes if x.memberships) >= 4
    assert sim.get("rdzv/spare/0/done") == b"2"
    assert all(sim.get(f"rdzv/spare/0/hb/{i}") is not None for i in (1, 2))
    assert int(sim.get("rdzv/spare/gc", b"0")) == 0


# ------------------------------------------------------------ the table
def test_every_transition_of_the_table_is_taken():
    """The scenarios of this file, together, take every transition of
    ringstore._protocol.TABLE (so none is dead, and each has a test)."""
    seen = set()
    runs = [
        test_exact_ranks_and_world, test_overflow_forms_consecutive_rounds_no_node_twice,
        test_set_closed_wakes_waiters_and_rejects_newcomers, test_join_timeout,
        test_round_hint_catches_up, test_dead_arrivals_are_excluded,
        test_lost_arrival_reply_is_not_resent, test_lost_claim_reply_is_resolved_by_reading,
        test_lost_result_reply_is_resolved_by_reading,
        test_counter_rollback_hands_a_number_out_twice_but_one_slot_owner,
        test_two_nodes_given_one_number_one_owns_the_slot,
        test_a_full_round_with_too_few_live_arrivals_is_void,
        test_a_node_in_a_collected_round_moves_on,
        test_a_result_that_vanishes_before_commit_is_read_again,
        test_a_slot_taken_by_another_owner_is_left_for_a_new_arrival,
        test_moving_on_finds_the_rendezvous_closed, test_a_restart_while_moving_on_revalidates,
        test_join_timeout_passes_while_the_store_is_down,
    ]
    import sim as simmod

    made = []
    real = simmod.Sim.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        made.append(self)
    simmod.Sim.__init__ = spy
    try:
        for fn in runs:
            fn()
        for seed in range(40):
            scenario(seed, commit_wait=1.0)
    finally:
        simmod.Sim.__init__ = real
    for s in made:
        for n in s.nodes:
            for j in n.joins:
                prev = "START"
                for state, event in j.trace:
                    seen.add((state, event))
                    prev = state
    missing = sorted(set(TABLE) - seen)
    assert not missing, missing
    assert set(STATES) >= {s for s, _ in TABLE} | set(TABLE.values()) | set(FINAL)


def test_readme_chart_is_the_table():
    text = README.read_text()
    begin, end = "<!-- chart: python3 -m ringstore._protocol -->\n", "<!-- end chart -->"
    assert begin in text and end in text
    assert text.split(begin, 1)[1].split(end, 1)[0] == chart()
