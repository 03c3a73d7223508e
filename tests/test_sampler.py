from dsod.data.loader import IterationBatchSampler, sample_seed


def take(sampler, n):
    out = []
    for batch in sampler:
        out.append(batch)
        if len(out) == n:
            break
    return out


def test_every_epoch_is_a_permutation():
    sampler = IterationBatchSampler(10, global_batch=5, micro_batch=5, seed=1)
    batches = take(sampler, 4)
    epoch0 = [i for b in batches[:2] for e, i in b]
    epoch1 = [i for b in batches[2:] for e, i in b]
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    assert {e for b in batches[2:] for e, _ in b} == {1}


def test_resume_continues_the_same_stream():
    full = take(IterationBatchSampler(7, 4, 2, seed=3), 10)
    resumed = take(IterationBatchSampler(7, 4, 2, seed=3, start_step=2), 6)
    assert resumed == full[4:10]


def test_processes_and_accumulation_split_the_same_global_batch():
    single = take(IterationBatchSampler(13, 8, 8, seed=0), 3)
    accumulated = take(IterationBatchSampler(13, 8, 2, seed=0), 12)
    rank0 = take(IterationBatchSampler(13, 8, 2, seed=0, rank=0, world_size=2), 6)
    rank1 = take(IterationBatchSampler(13, 8, 2, seed=0, rank=1, world_size=2), 6)
    for step in range(3):
        whole = single[step]
        assert sum(accumulated[4 * step : 4 * step + 4], []) == whole
        assert (
            sum(rank0[2 * step : 2 * step + 2], []) + sum(rank1[2 * step : 2 * step + 2], [])
            == whole
        )


def test_sample_seed_depends_on_epoch_and_index_only():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    assert len({sample_seed(0, e, i) for e in range(3) for i in range(3)}) == 9
