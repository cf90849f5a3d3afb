// Winograd F(2x2,3x3) conv2d (Lavin & Gray 2015) for 3x3, stride-1, pad-1 convs in NHWC: 2.25x
// fewer multiplies than a direct conv. Measured on ResNet-18's 3x3 convs (2-core Zen 3, AVX2, see
// benchmarks/winograd_conv.cc and benchmarks/README.md) at 1.6-1.9x the speed of oneDNN 3.2's
// direct conv for 64-256 channels, and faster than ONNX Runtime's.
//
// ember.dnnl.conv2d_wino takes ember.dnnl.conv2d's argument list (see dnnl_kernels.cc), so the
// compiler's dispatch swaps only the name (python/ember/compiler/dispatch.py decides where), and
// refuses what it does not cover with a ValueError: NCHW8c activations, kernels other than 3x3,
// stride, dilation, groups or padding other than 1, activations other than none, ReLU and clip.
// ember.dnnl.conv2d_wino_w8 is its weight-only int8 form (ember.dnnl.conv2d_w8's arguments): the
// int8 weights are dequantized once, when U is computed, so it runs as fast as the float kernel.
// ember.dnnl.conv2d_wino_q8 is its static int8 form (ember.dnnl.conv2d_q8's arguments, uint8
// activations, at most 1024 input channels): the same transforms in integers, V in int16, U' =
// 4 G g G^T in int16, the 16 GEMMs in int32 by an AVX2 vpmaddwd micro-kernel (portable code
// without AVX2), so the result is the exact integer conv, scaled and finished in float. Measured
// at 0.57-0.80x the time of oneDNN's direct int8 conv on ResNet-18's 64-256-channel convs.
//
// Per block of tiles (4x4 input patches, 2x2 outputs): V = B^T d B per tile and channel (AVX, or
// portable code without it), M[e] = V[e] x U[e] for the 16 elements e as one batched oneDNN
// matmul, Y = A^T M A + bias (+ residual), activation. U = G g G^T is computed once per weight id
// and prepacked into the matmul's layout. Blocks run in parallel on the OpenMP pool (each thread
// a single-threaded matmul on its own block), or serially when called inside a parallel region
// (a batch-splitting lane). Scratch memory is per thread and reused, so a call allocates nothing
// once warm. Thread-safe like the other ember.dnnl.* kernels.
#pragma once

#include <cstdint>
#include <cstddef>

namespace ember::kernels {

// Registers ember.dnnl.conv2d_wino, conv2d_wino_w8 and conv2d_wino_q8 with tvm-ffi (RegisterDnnlKernels calls
// it). Idempotent and thread-safe.
void RegisterWinogradKernels();

// Plans (per conv shape and thread count: the GEMM primitives, or for conv2d_wino_q8 the blocking
// and transformed weights) currently cached.
size_t WinogradCachedPlans();

// Whether this CPU runs the float transforms with AVX (else the portable code).
bool WinogradUsesAvx();

// Whether a float conv with `c` input and `k` output channels runs its 16 GEMMs on ember's own
// thin AVX2 kernel (C <= 32, K a multiple of 16, AVX2 + FMA) rather than oneDNN's batched matmul.
bool WinogradUsesThinGemm(int64_t c, int64_t k);

}  // namespace ember::kernels
