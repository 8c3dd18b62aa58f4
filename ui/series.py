"""A metric's curve made small enough for a chart without losing what a reader looks for.

A chart is a few hundred pixels wide: 100,000 points draw no more than 2,000 do, but cost 50
times the bytes and the parsing. Each bucket of consecutive values keeps its smallest and its
largest value (in their order), so spikes and dips stay visible, unlike averaging or taking
every n-th point. The full values stay downloadable (the metric's CSV and JSON).
"""

import math

DEFAULT_BUCKETS = 1000


def chart_x(steps):
    """The x of each value: its step when every value was logged with one, else 1..n."""
    if steps and all(isinstance(step, (int, float)) for step in steps):
        return list(steps), True
    return list(range(1, len(steps) + 1)), False


def min_max_buckets(xs, ys, buckets=DEFAULT_BUCKETS):
    """(xs, ys) of at most 2 * buckets points: each bucket's minimum and maximum in x order.
    None values (not numbers) are gaps: a bucket of nothing but None keeps one None."""
    count = len(ys)
    if count <= 2 * buckets:
        return list(xs), list(ys)
    out_x, out_y = [], []
    for bucket in range(buckets):
        start, end = bucket * count // buckets, (bucket + 1) * count // buckets
        low = high = None
        for index in range(start, end):
            value = ys[index]
            if value is None:
                continue
            if low is None or value < ys[low]:
                low = index
            if high is None or value > ys[high]:
                high = index
        if low is None:
            out_x.append(xs[start])
            out_y.append(None)
            continue
        for index in sorted({low, high}):
            out_x.append(xs[index])
            out_y.append(ys[index])
    return out_x, out_y


def chart_series(steps, values, buckets=DEFAULT_BUCKETS):
    """The JSON a chart draws: {x, y, total, shown, uses_steps, min, max, last}."""
    xs, uses_steps = chart_x(steps)
    # JSON has no NaN or infinity: such a value is a gap in the curve
    values = [None if value is None or not math.isfinite(value) else value for value in values]
    shown_x, shown_y = min_max_buckets(xs, values, buckets)
    numbers = [value for value in values if value is not None]
    return {"x": shown_x, "y": shown_y, "total": len(values), "shown": len(shown_y),
            "uses_steps": uses_steps,
            "min": min(numbers) if numbers else None, "max": max(numbers) if numbers else None,
            "last": numbers[-1] if numbers else None}
