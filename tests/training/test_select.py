"""The keep rule on hand-built validation results: noise never makes the run leave the simpler model."""

import numpy as np

from embedder.training.select import Candidate, choose, clearly_better, paired
from embedder.training.validate import Score


def _score(right: str, map_at_r: float) -> Score:
    """A validation result from a string of 1s (labelled right) and 0s."""
    correct = np.array([c == "1" for c in right])
    m = {
        "label_accuracy": float(correct.mean()),
        "label_accuracy_ci": [0.0, 1.0],
        "n_scored": len(correct),
        "score_map_at_r": map_at_r,
    }
    return Score(m, correct)


def test_paired__counts_each_direction():
    assert paired(_score("1100", 0.5), _score("1010", 0.5)) == (1, 1)


def test_clearly_better__two_more_right_of_forty_is_noise_eight_is_not():
    base = _score("1" * 30 + "0" * 10, 0.5)
    assert not clearly_better(_score("1" * 32 + "0" * 8, 0.5), base)
    assert clearly_better(_score("1" * 38 + "0" * 2, 0.5), base)


def test_choose__keeps_the_baseline_when_the_gain_is_noise_and_it_ranks_worse():
    base = Candidate("the pretrained features", _score("1" * 36 + "0" * 4, 0.80))
    tuned = Candidate("epoch 4", _score("1" * 37 + "0" * 3, 0.75), 4, {})
    kept, why = choose(base, [tuned])
    assert kept is base and why.startswith("the pretrained features: validation label accuracy 0.900")


def test_choose__a_clear_gain_on_labels_wins():
    base = Candidate("the pretrained features", _score("1" * 28 + "0" * 12, 0.9))
    tuned = Candidate("epoch 4", _score("1" * 39 + "0", 0.7), 4, {})
    kept, why = choose(base, [tuned])
    assert kept is tuned and "labels 11 validation images right that the pretrained features got wrong" in why


def test_choose__a_tie_on_labels_goes_to_the_better_ranking():
    base = Candidate("the pretrained features", _score("1" * 40, 0.75))
    tuned = Candidate("epoch 8", _score("1" * 40, 0.99), 8, {})
    kept, why = choose(base, [tuned])
    assert kept is tuned and "as well as the pretrained features and ranks them better" in why


def test_choose__one_fewer_right_never_wins_on_ranking_alone():
    base = Candidate("the pretrained features", _score("1" * 40, 0.75))
    tuned = Candidate("epoch 8", _score("1" * 39 + "0", 0.99), 8, {})
    assert choose(base, [tuned])[0] is base


def test_choose__without_validation_the_baseline_stays_and_says_why():
    empty = Score({}, np.zeros(0, dtype=bool))
    base = Candidate("the pretrained features", empty)
    kept, why = choose(base, [Candidate("epoch 3", empty, 3, {})])
    assert kept is base and why == "the pretrained features: no validation images to check anything against"


def test_improves__one_image_less_right_at_the_top_is_noise_a_better_ranking_is_not():
    from embedder.training.select import improves

    best = _score("1" * 179, 0.974)  # every validation image right, ranking so-so
    later = _score("1" * 178 + "0", 0.995)  # one image less: noise; the ranking: much better
    assert improves(later, best, top=best)
    assert not improves(_score("1" * 178 + "0", 0.970), best, top=best)  # worse ranking: no


def test_improves__cannot_drift_below_the_best_labels_seen_by_more_than_noise():
    from embedder.training.select import improves

    top = _score("1" * 40, 0.90)
    best = _score("1" * 35 + "0" * 5, 0.95)
    slipping = _score("1" * 33 + "0" * 7, 0.99)  # no worse than best beyond noise, but clearly worse than top
    assert improves(slipping, best, top=best)
    assert not improves(slipping, best, top)


def test_averaged_state__mixes_weights_by_share_and_keeps_the_tuned_counters():
    import torch

    from embedder.training.select import averaged_state

    start = {"w": torch.zeros(3), "n": torch.tensor(0)}
    tuned = {"w": torch.tensor([1.0, 2.0, 4.0]), "n": torch.tensor(7)}
    half = averaged_state(start, tuned, 0.5)
    assert half["w"].tolist() == [0.5, 1.0, 2.0] and half["n"].item() == 7
    assert averaged_state(start, tuned, 1.0)["w"].tolist() == [1.0, 2.0, 4.0]


def test_kept_network__the_averaged_candidate_is_kept_when_it_labels_best_and_loads_its_weights():
    import torch

    from embedder.config import ModelConfig
    from embedder.network.model import EmbeddingNet
    from embedder.training.select import averaged_state, keep, kept_network

    model = EmbeddingNet(ModelConfig(backbone="convnet", dim=8, image_size=16, pretrained=False))
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    tuned_state = {k: (v + 1 if v.is_floating_point() else v) for k, v in start_state.items()}
    start = Candidate("start", _score("1" * 28 + "0" * 12, 0.6), 0, start_state)
    pre = Candidate("the pretrained features", _score("1" * 28 + "0" * 12, 0.6))
    best = Candidate("epoch 3", _score("1" * 34 + "0" * 6, 0.9), 3, tuned_state)
    mixed_state = averaged_state(start_state, tuned_state, 0.5)
    mixed = Candidate("epoch 3 averaged", _score("1" * 40, 0.85), 3, mixed_state, True)
    chosen, why = keep(start, best, pre, mixed)
    assert chosen is mixed and why.startswith("epoch 3 averaged")
    kept = kept_network(model, chosen, "cpu")
    w = next(k for k, v in start_state.items() if v.is_floating_point())
    assert torch.allclose(kept.state_dict()[w], start_state[w] + 0.5)
    assert keep(start, best, pre, None)[0] is best


def test_keep__the_first_answer_is_what_training_must_beat():
    """A run's first answer (first.py) stands in for the untrained network (from scratch) and for the plain
    pretrained features: training replaces it only by the same paired rule, and a kept first answer is its own
    network, returned as it is."""
    from embedder.config import ModelConfig
    from embedder.network.model import EmbeddingNet
    from embedder.training.select import keep, kept_network

    pixels = EmbeddingNet(ModelConfig(backbone="pixels", dim=None, image_size=8))
    first = Candidate("the raw pixels at 8 px", _score("1" * 36 + "0" * 4, 0.5), model=pixels)
    untrained = Candidate("the network before training", _score("1" * 10 + "0" * 30, 0.1), 0, {})
    noise = Candidate("epoch 2", _score("1" * 37 + "0" * 3, 0.4), 2, {})  # one more right, ranks worse
    chosen, why = keep(untrained, noise, None, baseline=first)
    assert chosen is first and why.startswith("the raw pixels at 8 px")
    assert kept_network(EmbeddingNet(ModelConfig(dim=8, image_size=16)), chosen, "cpu") is pixels
    clearly = Candidate("epoch 4", _score("1" * 40, 0.9), 4, {})
    assert keep(untrained, clearly, None, baseline=first)[0] is clearly
    # a pretrained backbone: the first answer stands where the plain pretrained features stood
    assert (
        keep(untrained, noise, Candidate("the pretrained features", _score("0" * 40, 0.0)), baseline=first)[0] is first
    )
    # no validation at all: from scratch, training is the only way to a useful network, first answer or not
    empty = Candidate("the raw pixels at 8 px", Score({}, np.zeros(0, dtype=bool)), model=pixels)
    assert (
        keep(
            Candidate("the network before training", Score({}, np.zeros(0, dtype=bool)), 0), noise, None, baseline=empty
        )[0]
        is noise
    )


def test_choose_tuned__the_averaged_network_stays_unless_full_fine_tuning_labels_clearly_better():
    from embedder.training.select import choose_tuned

    base = Candidate("the pretrained features", _score("1" * 28 + "0" * 12, 0.60))
    mixed = Candidate("epoch 5 averaged", _score("1" * 37 + "0" * 3, 0.80), 5, averaged=True)
    ranks_better = Candidate("epoch 5", _score("1" * 38 + "0" * 2, 0.95), 5)  # one more right, ranks better: noise
    kept, why = choose_tuned(base, ranks_better, mixed)
    assert kept is mixed and "epoch 5 without the average labels 1 validation image right" in why
    labels_better = Candidate("epoch 5", _score("1" * 40, 0.95), 5)
    mixed_worse = Candidate("epoch 5 averaged", _score("1" * 30 + "0" * 10, 0.80), 5, averaged=True)
    assert choose_tuned(base, labels_better, mixed_worse)[0] is labels_better  # 10 more right: not noise
    assert choose_tuned(base, labels_better, None)[0] is labels_better
    no_gain = Candidate("epoch 1", _score("1" * 28 + "0" * 12, 0.50), 1)
    assert choose_tuned(base, no_gain, no_gain)[0] is base  # neither beats the pretrained features


def _answers(n_fooled: int, n: int = 100):
    """``n`` validation answers among two classes: each query's nearest training image has its label; for the
    first ``n_fooled`` queries the next 19 have the other one, so a vote of more than one neighbour goes wrong."""
    from embedder.answers.calibrate import Answers

    labels = np.arange(n) % 2
    neighbours = np.repeat(labels[:, None], 20, axis=1)
    neighbours[:n_fooled, 1:] = 1 - labels[:n_fooled, None]
    distances = np.tile(np.linspace(0.1, 0.2, 20), (n, 1))
    return Answers(labels, neighbours, distances, np.full(n, 0.5))


def test_choose_k__a_k_that_labels_validation_clearly_better_replaces_the_default():
    from embedder.training.select import choose_k

    choice = choose_k(_answers(n_fooled=10))
    assert choice["k"] == 1 and choice["label_accuracy_by_k"] == {"1": 1.0, "3": 0.9, "5": 0.9, "10": 0.9, "20": 0.9}
    assert choice["why"].startswith("k = 1: its vote labels 1.000 of 100 validation images right against 0.900")


def test_choose_k__one_image_more_right_is_noise_and_the_default_stays():
    from embedder.training.select import choose_k

    choice = choose_k(_answers(n_fooled=1))
    assert choice["k"] == 5 and choice["label_accuracy_by_k"]["1"] > choice["label_accuracy_by_k"]["5"]
    assert "no other k labels the 100 validation images clearly more right (the best, k = 1" in choice["why"]
