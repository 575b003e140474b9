import math

import pytest
import torch

from vae.dsp import hz_to_mel, mel_filterbank, mel_spectrogram, mel_to_hz, stft


def test_slaney_mel_scale_known_values():
    # Slaney: 200/3 Hz per mel below 1 kHz, 27 mels per factor 6.4 above.
    assert float(hz_to_mel(torch.tensor(0.0))) == 0.0
    assert float(hz_to_mel(torch.tensor(200.0))) == pytest.approx(3.0)
    assert float(hz_to_mel(torch.tensor(1000.0))) == pytest.approx(15.0)
    assert float(hz_to_mel(torch.tensor(6400.0))) == pytest.approx(42.0)
    assert float(mel_to_hz(torch.tensor(42.0))) == pytest.approx(6400.0)
    freqs = torch.linspace(0, 22050, 101, dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(freqs)), freqs, atol=1e-6)


def test_filterbank_triangles_peak_at_their_centres_and_have_unit_area():
    sample_rate, n_fft, n_mels = 44100, 4096, 40
    bank = mel_filterbank(sample_rate, n_fft, n_mels)
    assert bank.shape == (n_mels, n_fft // 2 + 1)
    assert (bank >= 0).all()
    bin_hz = sample_rate / n_fft
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(sample_rate / 2))), n_mels + 2))[1:-1]
    for band in range(5, n_mels):  # the low bands are narrower than a bin
        peak_hz = int(bank[band].argmax()) * bin_hz
        assert abs(peak_hz - float(centres[band])) <= bin_hz
        # Slaney norm: area of each triangle (in Hz) is 1.
        assert float(bank[band].sum()) * bin_hz == pytest.approx(1.0, rel=0.05)


def test_mel_spectrogram_of_a_tone_peaks_in_the_band_of_the_tone():
    sample_rate, n_fft, n_mels = 44100, 2048, 64
    t = torch.arange(sample_rate) / sample_rate
    tone = torch.sin(2 * math.pi * 3000.0 * t)[None]
    mel = mel_spectrogram(tone, sample_rate, n_fft, n_mels)[0]
    band = int(mel.mean(dim=-1).argmax())
    bank = mel_filterbank(sample_rate, n_fft, n_mels)
    assert band == int(bank[:, round(3000.0 / (sample_rate / n_fft))].argmax())


def test_stft_shape_and_hop_default():
    spec = stft(torch.randn(3, 2, 4096), 512)
    assert spec.shape == (3, 2, 257, 4096 // 128 + 1) and spec.is_complex()


def _torch_stft(signal: torch.Tensor, n_fft: int) -> torch.Tensor:
    batch, channels, length = signal.shape
    spec = torch.stft(signal.reshape(-1, length), n_fft, hop_length=max(n_fft // 4, 1),
                      window=torch.hann_window(n_fft, dtype=signal.dtype), center=True,
                      pad_mode="reflect", return_complex=True)
    return spec.reshape(batch, channels, *spec.shape[-2:])


@pytest.mark.parametrize("n_fft", [8, 9, 64, 256])
def test_stft_and_its_hand_written_gradient_match_torch_stft(n_fft):
    """Odd sizes too: there the hop (n_fft // 4) does not divide the window and there is no
    Nyquist bin."""
    signal = torch.randn(2, 3, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fast_leaf, slow_leaf = signal.clone().requires_grad_(True), signal.clone().requires_grad_(True)
    fast, slow = stft(fast_leaf, n_fft, dtype=torch.float64), _torch_stft(slow_leaf, n_fft)
    torch.testing.assert_close(fast, slow)
    upstream = torch.randn(fast.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(torch.autograd.grad(fast, fast_leaf, upstream)[0],
                               torch.autograd.grad(slow, slow_leaf, upstream)[0])


def test_banded_mel_projection_matches_the_dense_filterbank_with_gradients():
    """Includes filter blocks with no bins (many narrow low filters on a short FFT)."""
    from vae.dsp import apply_mel_filterbank
    for n_fft, n_mels in ((2048, 320), (256, 80), (32, 5)):
        mags = torch.rand(2, 3, 500, n_fft // 2 + 1, dtype=torch.float64).transpose(-1, -2)
        bank = mel_filterbank(44100, n_fft, n_mels).double()
        fast_leaf, slow_leaf = mags.clone().requires_grad_(True), mags.clone().requires_grad_(True)
        fast = apply_mel_filterbank(fast_leaf, 44100, n_fft, n_mels)
        slow = bank @ slow_leaf
        torch.testing.assert_close(fast, slow)
        upstream = torch.randn(slow.shape, dtype=torch.float64)
        torch.testing.assert_close(torch.autograd.grad(fast, fast_leaf, upstream)[0],
                                   torch.autograd.grad(slow, slow_leaf, upstream)[0])
