"""The ort backend's options (how its sessions are driven), checked at validation with no onnxruntime import."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from workers.backends.base import BackendOptions

CUDA_OPTIONS = ("cudnn_conv_algo_search", "prefer_nhwc", "arena_extend_strategy")


class OrtOptions(BackendOptions):
    providers: list[Literal["cuda", "cpu", "tensorrt"]] | None = Field(None, min_length=1)
    """Execution providers in order; default: [cuda] on a cuda trial, [cpu] on a cpu trial."""
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] | None = None
    """Session graph optimisations; default: ORT's own default (all)."""
    intra_op_num_threads: int | None = Field(None, le=1024)
    inter_op_num_threads: int | None = Field(None, ge=0, le=1024)
    io_binding: bool = False
    """Bind device buffers by pointer instead of passing numpy arrays to session.run."""
    cuda_graph: bool = False
    """ORT's own CUDA graph capture (enable_cuda_graph); requires io_binding."""
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] | None = None
    """CUDA provider: how cuDNN convolution algorithms are chosen; default: ORT's (EXHAUSTIVE)."""
    prefer_nhwc: bool = False
    """CUDA provider: NHWC convolution kernels (a build with them; else the trial is skipped)."""
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] | None = None
    """CUDA provider: how its memory arena grows; default: ORT's (kNextPowerOfTwo)."""
    trt_fp16: bool = False
    """TensorRT provider: let TensorRT pick fp16 kernels (trt_fp16_enable), also for an fp32 model."""
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    """torch.onnx exporter used for torch models."""
    dynamic_shapes: bool = False
    """Torch models: one export with the batch and named axes dynamic, for every shape, instead of one
    static-shape export per shape (the default, and the fair one: a dynamic export leaves shape ops on
    the CPU, and ORT's CUDA graph may refuse it). An ONNX file is used as it is either way."""
    opset: int | None = Field(None, ge=1, le=99)

    @model_validator(mode="after")
    def _graph_needs_binding(self) -> OrtOptions:
        if self.cuda_graph and not self.io_binding:
            raise ValueError("cuda_graph: true requires io_binding: true (ORT captures at fixed addresses)")
        if self.intra_op_num_threads is not None and self.intra_op_num_threads < 0:
            raise ValueError("intra_op_num_threads must be >= 0 (0 = ORT's default)")
        cuda_opts = [k for k in CUDA_OPTIONS if getattr(self, k) not in (None, False)]
        if cuda_opts and self.providers is not None and "cuda" not in self.providers:
            raise ValueError(f"{', '.join(cuda_opts)}: CUDA provider options, but providers is "
                             f"{self.providers}; add cuda to providers or drop them")
        if self.trt_fp16 and "tensorrt" not in (self.providers or []):
            raise ValueError("trt_fp16: true is a TensorRT provider option; set providers: [tensorrt, cuda]")
        return self
