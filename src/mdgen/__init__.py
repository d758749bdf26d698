"""mdgen: user-conditioned radar micro-Doppler spectrogram generation."""

__version__ = "0.1.0"
