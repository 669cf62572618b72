import random

from shared.ordering import OrderedMerge


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lowest_order_key_first_whatever_the_arrival_order():
    clock = Clock()
    merge = OrderedMerge(idle_s=1.0, clock=clock)
    merge.set_inputs(["events", "labels"])
    events = [((float(t), 1, 0, t), f"event{t}") for t in range(5)]
    labels = [((float(t), 0, 0, t), f"label{t}") for t in (1, 3)]
    for order, item in events:
        merge.push("events", order, item)
    assert list(merge.pop_ready()) == []  # labels input empty and not yet idle
    for order, item in labels:
        merge.push("labels", order, item)
    got = list(merge.pop_ready())
    # label before the event with the same time; stops once the labels input runs dry
    assert got == ["event0", "label1", "event1", "event2", "label3"]
    clock.now = 0.5
    assert list(merge.pop_ready()) == []  # the wait started when labels ran dry, at 0.0
    clock.now = 1.0
    assert list(merge.pop_ready()) == ["event3", "event4"]


def test_the_idle_wait_starts_when_an_empty_input_holds_the_merge_back():
    """A long quiet spell does not count as waiting: a burst still waits for the other input."""
    clock = Clock()
    merge = OrderedMerge(idle_s=1.0, clock=clock)
    merge.set_inputs(["events", "labels"])
    clock.now = 100.0
    merge.push("events", (5.0, 1, 0, 0), "event0")
    assert list(merge.pop_ready()) == []
    clock.now = 100.5
    merge.push("labels", (4.0, 0, 0, 0), "label-early")
    assert list(merge.pop_ready()) == ["label-early"]  # then labels is empty again: wait anew
    clock.now = 101.0
    assert list(merge.pop_ready()) == []
    clock.now = 101.5
    assert list(merge.pop_ready()) == ["event0"]


def test_merge_is_independent_of_fetch_interleaving():
    rng = random.Random(7)
    records = {
        "a": [((float(i * 2), 1, 0, i), f"a{i}") for i in range(50)],
        "b": [((float(i * 3), 0, 1, i), f"b{i}") for i in range(30)],
    }
    expected = [item for _, item in sorted(records["a"] + records["b"])]
    for _ in range(20):
        clock = Clock()
        merge = OrderedMerge(idle_s=10.0, clock=clock)
        merge.set_inputs(records)
        cursors = dict.fromkeys(records, 0)
        out = []
        while any(cursors[k] < len(records[k]) for k in records):
            key = rng.choice([k for k in records if cursors[k] < len(records[k])])
            n = rng.randint(1, 5)
            for order, item in records[key][cursors[key] : cursors[key] + n]:
                merge.push(key, order, item)
            cursors[key] += n
            out.extend(merge.pop_ready())
        clock.now = 100.0
        out.extend(merge.pop_ready())
        assert out == expected


def test_revoked_inputs_are_dropped():
    merge = OrderedMerge(idle_s=0.0, clock=Clock())
    merge.set_inputs(["a", "b"])
    merge.push("b", (0.0, 0, 0, 0), "x")
    merge.set_inputs(["a"])
    assert len(merge) == 0
    assert list(merge.pop_ready()) == []


def _reference_pop_ready(merge):
    """The merge rule written plainly: each time, the lowest head, unless held back."""
    while True:
        heads = [(inp.buffer[0][0], key) for key, inp in merge._inputs.items() if inp.buffer]
        if not heads or merge._held_back(merge.clock()):
            return
        _, key = min(heads)
        yield merge._inputs[key].buffer.popleft()[1]


def test_pop_ready_releases_what_the_plain_rule_releases():
    """Random pushes, clock steps and pops on three inputs: the optimised pop_ready (runs
    from the only non-empty input) releases the same records in the same order."""
    rng = random.Random(11)
    for _ in range(300):
        clocks = Clock(), Clock()
        fast, plain = (OrderedMerge(idle_s=1.0, clock=c) for c in clocks)
        keys = ["a", "b", "c"][: rng.randrange(1, 4)]
        for m in (fast, plain):
            m.set_inputs(keys)
        offsets = dict.fromkeys(keys, 0)
        for _ in range(40):
            action = rng.random()
            if action < 0.5:
                key = rng.choice(keys)
                for _ in range(rng.randrange(1, 4)):
                    # inputs differ in partition, as in use, so order keys never tie
                    order = (
                        float(rng.randrange(20)),
                        rng.randrange(2),
                        keys.index(key),
                        offsets[key],
                    )
                    offsets[key] += 1
                    for m in (fast, plain):
                        m.push(key, order, (key, order))
            elif action < 0.7:
                step = rng.choice([0.3, 0.6, 1.2])
                for c in clocks:
                    c.now += step
            else:
                assert list(fast.pop_ready()) == list(_reference_pop_ready(plain))
