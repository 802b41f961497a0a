"""The cache behind recomputed attention maps (tiny_dit.inside.attention_maps.BoundedCache): it computes
a missing value once, keeps the most recently used ones and never more than its bound. That the
recomputed maps are the pipeline's, and that the app's caches stay bounded, is checked in
test_app.py (self-attention) and test_word_attention.py (cross-attention)."""

import threading

from tiny_dit.inside.attention_maps import BoundedCache


def test_the_cache_computes_once_and_drops_the_least_recently_used():
    cache, calls = BoundedCache(max_entries=2), []

    def compute(key):
        def fn():
            calls.append(key)
            return key * 10
        return fn

    assert cache.get_or_compute(1, compute(1)) == 10 and cache.get_or_compute(2, compute(2)) == 20
    assert cache.get_or_compute(1, compute(1)) == 10 and calls == [1, 2]  # kept: not computed again
    cache.get_or_compute(3, compute(3))  # 2 is now the least recently used: dropped
    assert len(cache) == 2
    cache.get_or_compute(2, compute(2))
    assert calls == [1, 2, 3, 2]
    cache.clear()
    assert len(cache) == 0


def test_the_cache_stays_bounded_when_threads_share_it():
    cache = BoundedCache(max_entries=4)

    def work(offset):
        for i in range(200):
            cache.get_or_compute((offset, i % 7), lambda: i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 4
