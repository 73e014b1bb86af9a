"""The corner-response kernel (:mod:`idtfv.idt._corners_nb`): OpenCV's ``cornerMinEigenVal(gray, 3, ksize=3)``
bit for bit on an AVX2 OpenCV build, and the smaller eigenvalue of the structure tensor by an independent float64
computation everywhere."""

from __future__ import annotations

import platform

import cv2
import numpy as np
import pytest

from conftest import SHARED, requires_shared
from idtfv.idt import sampling
from idtfv.idt._corners_nb import SOBEL_SCALE, min_eigen_response

#: OpenCV's filters take the AVX2 path whose fused multiply-adds the kernel reproduces (x86-64 wheels on AVX2 CPUs)
_CPU_AVX2 = next((i for i in range(64) if cv2.getHardwareFeatureName(i) == "AVX2"), None)  # not exported
OPENCV_AVX2 = (platform.machine().lower() in ("x86_64", "amd64") and _CPU_AVX2 is not None
               and cv2.checkHardwareSupport(_CPU_AVX2))
CLIPS = ("vtest_320x240.avi", "carphone_pristine.mp4", "tree.avi", "person01_boxing_d1_uncomp.avi",
         "bikes_320x240.avi")
SIZES = [(1, 1), (1, 5), (5, 1), (2, 2), (3, 3), (2, 40), (40, 2), (7, 31), (7, 32), (7, 33), (31, 64), (33, 65),
         (50, 97)]


def _response(img: np.ndarray) -> np.ndarray:
    out = np.full(img.shape, np.nan, np.float32)
    min_eigen_response(img, out)
    return out


def _naive(img: np.ndarray) -> np.ndarray:
    """The definition in float64: 3x3 Sobel (reflect-101 border), the structure tensor summed over 3x3, its smaller
    eigenvalue, with OpenCV's scaling (Sobel taps / (4 * 3 * 255))."""
    p = np.pad(img.astype(np.float64), 1, mode="reflect") if min(img.shape) > 1 else np.pad(
        img.astype(np.float64), 1, mode="edge")
    smooth = np.array([1.0, 2.0, 1.0])
    h, w = img.shape
    dx = sum(smooth[k] * (p[k:k + h, 2:w + 2] - p[k:k + h, 0:w]) for k in range(3)) * SOBEL_SCALE
    dy = sum(smooth[k] * (p[2:h + 2, k:k + w] - p[0:h, k:k + w]) for k in range(3)) * SOBEL_SCALE
    def box(a):
        q = np.pad(a, 1, mode="reflect") if min(a.shape) > 1 else np.pad(a, 1, mode="edge")
        return sum(q[i:i + h, j:j + w] for i in range(3) for j in range(3))
    a, b, c = box(dx * dx) / 2, box(dx * dy), box(dy * dy) / 2
    return (a + c) - np.sqrt((a - c) ** 2 + b * b)


def _same_bits(a: np.ndarray, b: np.ndarray) -> int:
    """How many pixels differ in any bit."""
    return int((a.view(np.int32) != b.view(np.int32)).sum())


@pytest.mark.parametrize("shape", SIZES)
def test_random_images_against_opencv_and_the_definition(shape):
    rng = np.random.default_rng(sum(shape))
    for img in (rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, 77, np.uint8),
                (rng.random(shape) < 0.5).astype(np.uint8) * 255):
        ours = _response(img)
        ref = cv2.cornerMinEigenVal(img, 3, ksize=3)
        if OPENCV_AVX2:
            assert _same_bits(ours, ref) == 0
        else:
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(ref).max())))
        if min(shape) > 1:  # the definition (float64): the kernel's float32 error is relative to the largest value
            np.testing.assert_allclose(ours, _naive(img), rtol=0, atol=2e-6 * max(1e-3, float(np.abs(ours).max())))


@requires_shared
@pytest.mark.skipif(not OPENCV_AVX2, reason="bit identity holds for OpenCV's AVX2 path")
def test_pyramid_levels_of_the_shared_clips_match_opencv_bit_for_bit():
    compared = 0
    for clip in CLIPS:
        cap = cv2.VideoCapture(str(SHARED / "reference" / "videos" / clip))
        for _ in range(4):
            ok, frame = cap.read()
            assert ok, clip
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            for level in range(6):
                scale = 2 ** (-level / 2)
                size = (max(1, int(gray.shape[1] * scale)), max(1, int(gray.shape[0] * scale)))
                img = np.ascontiguousarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA))
                assert _same_bits(_response(img), cv2.cornerMinEigenVal(img, 3, ksize=3)) == 0, (clip, size)
                compared += img.size
    assert compared > 1_000_000


def test_corner_response_uses_the_kernel_for_uint8_and_opencv_for_float():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    got = sampling.corner_response(img, remember=False)
    assert got.dtype == np.float32 and not got.flags.writeable
    assert _same_bits(got, _response(img)) == 0
    flt = img.astype(np.float32) / 255
    assert _same_bits(sampling.corner_response(flt, remember=False), cv2.cornerMinEigenVal(flt, 3, ksize=3)) == 0
    view = np.asarray(rng.integers(0, 256, (30, 82), dtype=np.uint8))[:, ::2]  # not contiguous
    assert _same_bits(sampling.corner_response(view, remember=False), _response(np.ascontiguousarray(view))) == 0
