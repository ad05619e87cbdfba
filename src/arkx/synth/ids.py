"""Identifiers drawn from a dataset's random stream, spelled the way the providers spell theirs:
hexadecimal strings (VinDr-CXR, COVIDx, ChestDR), UUID-like patient ids (RSNA, SIIM) and MIMIC-CXR's
dashed DICOM ids."""

from __future__ import annotations


def random_hex(rng, k: int) -> str:
    """``k`` random lower-case hexadecimal digits."""
    return "".join(f"{int(x):x}" for x in rng.integers(0, 16, k))


def uuid_like(rng) -> str:
    """A version-4 UUID string (RSNA patient ids)."""
    h = "".join(f"{int(x):x}" for x in rng.integers(0, 16, 32))
    variant = "89ab"[int(rng.integers(4))]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def mimic_dicom_id(rng) -> str:
    """A MIMIC-CXR ``dicom_id``: five dashed groups of eight hexadecimal digits."""
    h = random_hex(rng, 40)
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))
