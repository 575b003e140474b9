"""Signal processing in torch (torchaudio is not available everywhere this runs)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.nn import functional

# Slaney's mel scale (librosa's default, used by DAC's metrics): linear below 1 kHz, log above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    hz = torch.as_tensor(hz, dtype=torch.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(hz, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    mel = torch.as_tensor(mel, dtype=torch.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


@lru_cache(maxsize=64)
def _mel_filterbank_cpu(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                        f_max: float) -> torch.Tensor:
    # Cached and shared: it must not be an inference tensor even when first built under
    # inference mode (validation), or training could not use it afterwards.
    with torch.inference_mode(False):
        return _build_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)


def _build_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                          f_max: float) -> torch.Tensor:
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(float(hz_to_mel(torch.tensor(f_min))),
                                float(hz_to_mel(torch.tensor(f_max))), n_mels + 2,
                                dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)
    widths = hz_points[1:] - hz_points[:-1]
    ramps = hz_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # Slaney area normalisation: each triangle has unit area in Hz, so bands of any width weigh alike.
    weights = weights * (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.to(torch.float32)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters, slaney scale and norm (as librosa's default)."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    return _mel_filterbank_cpu(sample_rate, n_fft, n_mels, float(f_min), float(f_max)).to(device)


class _FramedRFFT(torch.autograd.Function):
    """``torch.stft(center=False)`` of an already padded [N, L] signal, with a backward that costs
    about what the forward does. PyTorch's own backward runs a full complex FFT over zero-padded
    spectra and scatters the frames back with ``index_add_`` (5–6× the forward on CPU); here the
    gradient of the one-sided real FFT is an inverse real FFT of the gradient with its interior
    bins halved (they stand for two conjugate bins each), and the frames overlap-add as
    ceil(n_fft / hop) shifted slices."""

    @staticmethod
    def forward(ctx, padded: torch.Tensor, window: torch.Tensor,  # type: ignore[override]
                hop: int) -> torch.Tensor:
        ctx.save_for_backward(window)
        ctx.hop, ctx.length = hop, padded.shape[-1]
        return torch.stft(padded, window.shape[0], hop_length=hop, window=window, center=False,
                          return_complex=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (window,) = ctx.saved_tensors
        n_fft, hop = window.shape[0], ctx.hop
        bins = torch.full((n_fft // 2 + 1,), 0.5, dtype=window.dtype, device=window.device)
        bins[0] = 1.0
        if n_fft % 2 == 0:
            bins[-1] = 1.0  # Nyquist: one bin, like DC
        frames = torch.fft.irfft(grad.transpose(-1, -2) * bins, n=n_fft) * (n_fft * window)
        batch, n_frames, _ = frames.shape
        shifts = -(-n_fft // hop)
        signal_grad = frames.new_zeros(batch, max(ctx.length, (n_frames + shifts - 1) * hop))
        segments = signal_grad[:, :(n_frames + shifts - 1) * hop].view(batch, -1, hop)
        for shift in range(shifts):
            part = frames[:, :, shift * hop:(shift + 1) * hop]
            segments[:, shift:shift + n_frames, :part.shape[-1]] += part
        return signal_grad[:, :ctx.length], None, None


def stft(signal: torch.Tensor, n_fft: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Complex STFT of [..., T] → [..., n_fft // 2 + 1, frames]: Hann window of n_fft, hop n_fft / 4,
    centred with reflect padding (``torch.stft``'s ``center=True``), computed in ``dtype`` (fp32
    unless asked: fp16/bf16 FFTs lose too much)."""
    hop_length = max(n_fft // 4, 1)
    shape = signal.shape
    flat = signal.reshape(-1, shape[-1]).to(dtype)
    window = torch.hann_window(n_fft, device=signal.device, dtype=dtype)
    padded = functional.pad(flat.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect").squeeze(1)
    spec = _FramedRFFT.apply(padded, window, hop_length)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


class _Magnitude(torch.autograd.Function):
    """max(sqrt(re² + im²), sqrt(eps)) with a hand-written backward. Complex ``abs`` runs a scalar
    hypot per element and its backward recomputes it (``sgn``); on real views the forward is one
    square and one fused multiply-add, and the backward reuses the saved magnitude: about half the
    time of ``abs().clamp()`` forward and backward (7.8 vs 14.3 ms on [8, 4, 1025, 87], 2 threads)."""

    @staticmethod
    def forward(ctx, spec: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        ctx.floor = eps**0.5
        mag = torch.addcmul(spec.real.square(), spec.imag, spec.imag).sqrt_().clamp_(min=ctx.floor)
        ctx.save_for_backward(spec, mag)
        return mag

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        spec, mag = ctx.saved_tensors
        # d|z|/dz = z / |z|; zero where the floor holds (silence), as clamp's gradient is.
        scale = torch.where(mag > ctx.floor, grad / mag, 0.0)
        return spec * scale, None


def magnitude(spec: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|spec| floored at sqrt(eps), so the gradient is finite (zero) at silence."""
    return _Magnitude.apply(spec, eps)


# Filters per block of the banded mel projection: each triangle covers a few FFT bins, so a block
# of 32 neighbouring filters touches a narrow range of bins and the product skips the zeros.
_MEL_BLOCK_FILTERS = 32


@lru_cache(maxsize=64)
def _mel_blocks(sample_rate: int, n_fft: int, n_mels: int) -> tuple[tuple[slice, slice], ...]:
    """(filters, bins) slices that cover every nonzero weight of the filterbank."""
    nonzero = mel_filterbank(sample_rate, n_fft, n_mels) != 0
    blocks = []
    for start in range(0, n_mels, _MEL_BLOCK_FILTERS):
        filters = slice(start, min(start + _MEL_BLOCK_FILTERS, n_mels))
        bins = nonzero[filters].any(dim=0).nonzero().flatten().tolist()
        blocks.append((filters, slice(bins[0], bins[-1] + 1) if bins else slice(0, 0)))
    return tuple(blocks)


class _BandedProjection(torch.autograd.Function):
    """``bank @ x`` over dim -2, one block of filters at a time over the bins it touches. It works
    on x's transpose, [..., frames, bins]: the spectra are stored frames-major (the FFT's order), so
    every block is a strided matrix BLAS takes without a copy. Its own backward writes each block's
    gradient into one zeroed tensor; autograd's would zero and add a full-size tensor per block."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bank: torch.Tensor,  # type: ignore[override]
                blocks: tuple[tuple[slice, slice], ...]) -> torch.Tensor:
        frames_major = x.transpose(-1, -2)
        ctx.save_for_backward(bank)
        ctx.blocks, ctx.shape = blocks, frames_major.shape
        return torch.cat([torch.matmul(frames_major[..., bins], bank[filters, bins].T)
                          for filters, bins in blocks], dim=-1).transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (bank,) = ctx.saved_tensors
        grad_frames_major = grad.transpose(-1, -2)
        x_grad = grad.new_zeros(ctx.shape)
        for filters, bins in ctx.blocks:
            x_grad[..., bins] += torch.matmul(grad_frames_major[..., filters], bank[filters, bins])
        return x_grad.transpose(-1, -2), None, None


def apply_mel_filterbank(magnitudes: torch.Tensor, sample_rate: int, n_fft: int,
                         n_mels: int) -> torch.Tensor:
    """``mel_filterbank(...) @ magnitudes``: [..., n_fft // 2 + 1, frames] → [..., n_mels, frames],
    computed block by block over the filters' nonzero bins (the dense product is ~90 % zeros at
    the large FFT sizes; the sums are the same up to float rounding)."""
    bank = mel_filterbank(sample_rate, n_fft, n_mels, device=magnitudes.device).to(magnitudes.dtype)
    return _BandedProjection.apply(magnitudes, bank, _mel_blocks(sample_rate, n_fft, n_mels))


def mel_spectrogram(signal: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Mel-filtered STFT magnitude: [..., n_mels, frames]."""
    return apply_mel_filterbank(magnitude(stft(signal, n_fft)), sample_rate, n_fft, n_mels)
