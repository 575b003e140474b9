"""Causal models (``model.causal``), with and without the LSTM: causality measured exactly,
streaming equal to the offline pass for any chunking, and the receptive field and latency
checked against a brute-force measurement."""

import pytest
import torch

from vae.config import ModelConfig
from vae.inference.streaming import decode_stream, encode_stream
from vae.model import AudioVAE
from vae.model.streaming import (StreamingDecoder, StreamingEncoder, StreamingError,
                                 latency_samples, receptive_field)

STREAM_TOLERANCE = 1e-5  # the bound; measured ~1e-7 (float rounding)


def small(**kw) -> ModelConfig:
    """Odd and even strides (hop 6), dilations, a 2-wide kernel step: every padding rule in play."""
    base = dict(channels=4, channel_multipliers=[1, 2], strides=[2, 3], latent_dim=3,
                residual_dilations=[1, 3], kernel_size=5)
    return ModelConfig(**{**base, **kw})


def model_of(seed: int = 0, **kw) -> AudioVAE:
    torch.manual_seed(seed)
    return AudioVAE(small(**kw)).eval()


LSTM = pytest.mark.parametrize("lstm_layers", [0, 2], ids=["conv", "lstm"])


# ---- causality ------------------------------------------------------------------------------------

def outputs_with_input_changed_from(model: AudioVAE, t: int, length: int = 600):
    """(encoder frames, decoder samples, model samples), each for an input and for the same input
    with every sample from t on replaced."""
    torch.manual_seed(1)
    audio = torch.randn(1, 2, length)
    changed = audio.clone()
    changed[..., t:] = torch.randn(1, 2, length - t) * 3
    latent = torch.randn(1, 3, length // model.hop_length)
    latent_changed = latent.clone()
    latent_changed[..., t // model.hop_length:] += 1.0
    with torch.no_grad():
        return [(model.encode(audio).mean, model.encode(changed).mean),
                (model.decode(latent), model.decode(latent_changed)),
                (model(audio, sample=False).reconstruction, model(changed, sample=False).reconstruction)]


@LSTM
@pytest.mark.parametrize("t", [96, 301, 455])
def test_no_output_before_t_depends_on_input_from_t_on(lstm_layers, t):
    model = model_of(causal=True, lstm_layers=lstm_layers)
    hop = model.hop_length
    (enc, enc2), (dec, dec2), (out, out2) = outputs_with_input_changed_from(model, t)
    # encoder: frame i sees samples < (i + 1)·hop, nothing beyond its own hop
    assert torch.equal(enc[..., : t // hop], enc2[..., : t // hop])
    assert not torch.equal(enc[..., t // hop], enc2[..., t // hop])
    # decoder: sample s sees frames <= s / hop
    start = t // hop * hop
    assert torch.equal(dec[..., :start], dec2[..., :start])
    assert not torch.equal(dec[..., start], dec2[..., start])
    # the whole model: nothing before t's hop moves (before t itself when t starts a hop); the
    # samples of t's hop before t do move: the latency of one hop
    assert torch.equal(out[..., :start], out2[..., :start])
    assert not torch.equal(out[..., start:t + 1], out2[..., start:t + 1])
    assert (t == start) == torch.equal(out[..., :t], out2[..., :t])


@LSTM
def test_non_causal_models_are_not_causal(lstm_layers):
    """The check above can fail: a centred model's early outputs move with later input."""
    model = model_of(causal=False, lstm_layers=lstm_layers)
    t = 301
    (enc, enc2), (dec, dec2), (out, out2) = outputs_with_input_changed_from(model, t)
    assert not torch.equal(enc[..., : t // 6], enc2[..., : t // 6])
    assert not torch.equal(dec[..., : t // 6 * 6], dec2[..., : t // 6 * 6])
    assert not torch.equal(out[..., :t], out2[..., :t])


# ---- streaming = offline --------------------------------------------------------------------------

def random_sizes(total: int, largest: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(torch.randint(0, largest + 1, (1,), generator=generator)))
    sizes[-1] -= sum(sizes) - total
    return sizes


def stream_encode(model: AudioVAE, audio: torch.Tensor, sizes: list[int]):
    encoder = StreamingEncoder(model)
    parts = [encoder.push(chunk) for chunk in audio.split(sizes, dim=-1)]
    parts.append(encoder.flush())
    return torch.cat([m for m, _ in parts], -1), torch.cat([s for _, s in parts], -1)


def stream_decode(model: AudioVAE, latent: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    decoder = StreamingDecoder(model)
    return torch.cat([decoder.push(chunk) for chunk in latent.split(sizes, dim=-1)], -1)


def chunkings(length: int, hop: int, sample_rate: int) -> dict[str, list[int]]:
    def even(size: int) -> list[int]:
        return [size] * (length // size) + ([length % size] if length % size else [])
    return {"1 sample": even(1), "1 hop": even(hop), "10 ms": even(sample_rate // 100),
            "1 s": even(sample_rate), "random": random_sizes(length, 3 * hop, 0),
            "random large": random_sizes(length, sample_rate // 3, 1)}


@pytest.mark.parametrize(("lstm_layers", "activation"), [(0, "elu"), (2, "snake")],
                         ids=["conv-elu", "lstm-snake"])
def test_streaming_equals_offline_for_any_chunking(lstm_layers, activation):
    rate = 2000  # a low rate keeps "1 s" and "10 ms" chunks few samples long: a fast test
    model = model_of(causal=True, lstm_layers=lstm_layers, activation=activation, sample_rate=rate)
    hop = model.hop_length
    length = rate + 2 * rate // 3 + 5  # 1.67 s, not a multiple of the hop
    audio = torch.randn(2, length) * 0.5
    with torch.no_grad():
        posterior = model.encode(audio[None])
        whole = model.decode(posterior.mean)[0]
    frames = posterior.mean.shape[-1]
    worst = 0.0
    for name, sizes in chunkings(length, hop, rate).items():
        if name == "1 sample":
            sizes = sizes[:200]  # slow in Python: a few dozen hops are enough
        used = sum(sizes)
        with torch.no_grad():
            reference = model.encode(audio[None, :, :used])
        mean, std = stream_encode(model, audio[:, :used], sizes)
        assert mean.shape == reference.mean[0].shape, name
        worst = max(worst, float((mean - reference.mean[0]).abs().max()),
                    float((std - reference.std[0]).abs().max()))
    for sizes in ([1] * frames, random_sizes(frames, 20, 2), [0, frames]):
        decoded = stream_decode(model, posterior.mean[0], sizes)
        assert decoded.shape == whole.shape
        worst = max(worst, float((decoded - whole).abs().max()))
    print(f"max |streamed - offline| {worst:.1e}")
    assert worst <= STREAM_TOLERANCE
    assert whole.std() > 1e-3  # the output varies, so a wrong state could not hide


def test_an_empty_stream_and_empty_pushes():
    model = model_of(causal=True, lstm_layers=1)
    encoder = StreamingEncoder(model)
    mean, std = encoder.push(torch.zeros(2, 0))
    assert mean.shape == std.shape == (3, 0)
    assert encoder.flush()[0].shape == (3, 0)
    assert StreamingDecoder(model).push(torch.zeros(3, 0)).shape == (2, 0)


# ---- bad use --------------------------------------------------------------------------------------

def test_streaming_a_non_causal_model_is_refused():
    model = model_of(causal=False)
    for streamer in (StreamingEncoder, StreamingDecoder):
        with pytest.raises(StreamingError, match=r"not causal \(model.causal: false\)"):
            streamer(model)


def test_wrong_chunks_mid_stream_are_refused_clearly():
    model = model_of(causal=True)
    encoder = StreamingEncoder(model)
    encoder.push(torch.randn(2, 100))
    with pytest.raises(StreamingError, match=r"audio chunk: expected a float32 torch.Tensor "
                                             r"\[channels=2, n\]; got float32 \[1, 100\]"):
        encoder.push(torch.randn(1, 100))
    with pytest.raises(StreamingError, match=r"got float64 \[2, 100\]"):
        encoder.push(torch.randn(2, 100, dtype=torch.float64))
    with pytest.raises(StreamingError, match=r"got float32 \[1, 2, 100\]"):
        encoder.push(torch.randn(1, 2, 100))
    with pytest.raises(StreamingError, match=r"got ndarray"):
        encoder.push(torch.randn(2, 100).numpy())
    encoder.flush()
    with pytest.raises(StreamingError, match="flushed"):
        encoder.push(torch.randn(2, 100))
    decoder = StreamingDecoder(model)
    decoder.push(torch.randn(3, 4))
    with pytest.raises(StreamingError, match=r"latent chunk: expected .*\[latent_dim=3, n\]; "
                                             r"got float32 \[4, 4\]"):
        decoder.push(torch.randn(4, 4))


# ---- receptive field and latency ------------------------------------------------------------------

def inputs_seen(model: AudioVAE, length: int, outputs: range) -> list[list[int]]:
    """For each output sample, the input samples whose change moves it: the nonzero entries of
    its gradient (an infinitesimal perturbation: a finite one can vanish in float rounding at the
    edge of the receptive field, where weights multiply down to below an ulp)."""
    torch.manual_seed(3)
    audio = torch.randn(1, 2, length, requires_grad=True)
    out = model(audio, sample=False).reconstruction
    seen = []
    for t in outputs:
        (grad,) = torch.autograd.grad(out[0, :, t].sum(), audio, retain_graph=True)
        seen.append(grad[0].abs().sum(0).nonzero().flatten().tolist())
    return seen


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_receptive_field_and_latency_match_brute_force(causal):
    model = model_of(causal=causal)
    hop, length = model.hop_length, 1200
    centre = length // 2 // hop * hop
    spans, lookaheads = [], []
    for t, seen in zip(range(centre, centre + hop), inputs_seen(model, length, range(centre, centre + hop))):
        assert 0 < seen[0] and seen[-1] < length - 1, "too short to be away from the edges"
        spans.append(seen[-1] - seen[0] + 1)
        lookaheads.append(seen[-1] - t + 1)
    print(f"receptive field {max(spans)}, latency {max(lookaheads)} samples")
    assert receptive_field(model) == max(spans)
    assert latency_samples(model) == max(lookaheads)
    assert (latency_samples(model) == hop) == causal


@LSTM
def test_an_lstm_sees_the_whole_past(lstm_layers):
    """Beyond the convolutions' receptive field only the LSTM's memory reaches back."""
    model = model_of(causal=True, lstm_layers=lstm_layers)
    length = 400
    assert receptive_field(model) < length // 2
    (seen,) = inputs_seen(model, length, range(length - 1, length))
    assert (seen[0] == 0) == (lstm_layers > 0)


# ---- chunked inference (vae.inference.streaming) --------------------------------------------------

@pytest.mark.parametrize(("causal", "lstm_layers"), [(False, 2), (True, 0), (True, 2)],
                         ids=["centred-lstm", "causal", "causal-lstm"])
def test_chunked_inference_equals_the_whole_signal_pass(causal, lstm_layers):
    """An LSTM remembers everything before a chunk: the chunked path carries its state in order
    (centred models) or streams (causal models), and still equals the whole-signal pass."""
    model = model_of(causal=causal, lstm_layers=lstm_layers)
    length = 6 * 97 + 5
    audio = torch.randn(2, length)
    with torch.no_grad():
        posterior = model.encode(audio[None])
        whole = model.decode(posterior.mean)[0]
    parts = list(encode_stream(model, audio.split(37, dim=-1), chunk_frames=4))
    mean, std = (torch.cat([p[i] for p in parts], -1) for i in (0, 1))
    decoded = torch.cat(list(decode_stream(model, posterior.mean[0], chunk_frames=4)), -1)
    assert len(parts) > 10 and mean.shape == posterior.mean[0].shape and decoded.shape == whole.shape
    worst = max(float((mean - posterior.mean[0]).abs().max()),
                float((std - posterior.std[0]).abs().max()), float((decoded - whole).abs().max()))
    print(f"max |chunked - whole| {worst:.1e}")
    assert worst <= STREAM_TOLERANCE
