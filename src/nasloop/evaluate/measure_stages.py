"""The measuring stages of the cascade: `hardware` and `zero-cost`, run in the sandbox child.

Both run after `build` and before `train` (see `plan_stages`), so a candidate that breaks a hard
budget — FLOPs, latency, or a minimum proxy score — is rejected with a `budget` failure that names the
figure and the limit before any training is spent on it.
"""

from __future__ import annotations

import torch

from nasloop.candidate import Failure, FailureKind
from nasloop.evaluate.stages import StageContext, StageFailed, register_stage


def _budget(message: str) -> StageFailed:
    return StageFailed(Failure(FailureKind.BUDGET, message))


@register_stage("hardware", order=30)
def hardware_stage(context: StageContext) -> None:
    """Parameters, FLOPs, latency (median and spread per batch size), throughput, memory, energy, CO2."""
    from nasloop.hardware import measure_hardware

    settings = context.job.measure
    threads = context.job.recipe.threads or torch.get_num_threads()
    report = measure_hardware(
        context.require_model(), context.data.in_shape, device=context.device, batch_sizes=settings.batch_sizes,
        repeats=settings.repeats, warmup=settings.warmup, threads=threads, power_watts=settings.power_watts,
        grid_g_per_kwh=settings.grid_g_per_kwh,
    )  # fmt: skip
    context.metrics.update(report.metrics())
    context.info["hardware"] = report.info()
    limits = context.job.limits
    flops = context.metrics.get("flops")
    if limits.max_flops is not None and flops is not None and flops > limits.max_flops:
        raise _budget(f"the network needs {flops:,.0f} FLOPs per image; the limit is {limits.max_flops:,.0f}")
    latency = context.metrics.get("latency_ms")
    if limits.max_latency_ms is not None and latency is not None and latency > limits.max_latency_ms:
        raise _budget(
            f"batch-1 latency is {latency:.3g} ms on {context.device.type}; the limit is {limits.max_latency_ms:g} ms"
        )


@register_stage("zero-cost", order=40)
def zero_cost_stage(context: StageContext) -> None:
    """The job's zero-cost proxies on one batch of training images, at initialisation."""
    from nasloop.evaluate.proxies import ProxyError, compute_proxies

    names = context.job.proxies
    if not names:
        raise StageFailed(Failure(FailureKind.CRASH, "the zero-cost stage was requested without any proxies"))
    data = context.data
    count = min(context.job.measure.proxy_batch_size, len(data.train_y))
    images = data.train_x[:count].to(device=context.device, dtype=torch.float32) / 255.0
    mean = torch.tensor(data.mean, dtype=torch.float32, device=context.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32, device=context.device).view(1, -1, 1, 1)
    inputs = (images - mean) / std
    targets = data.train_y[:count].to(device=context.device, dtype=torch.long)
    errors: dict[str, ProxyError] = {}
    values = compute_proxies(
        context.require_model(), inputs, targets, names, num_classes=data.num_classes, seed=context.job.seed,
        errors=errors,
    )  # fmt: skip
    context.metrics.update(values)
    if errors:
        context.info["proxy_errors"] = {name: str(error) for name, error in errors.items()}
    for name, minimum in context.job.limits.min_proxy.items():
        value = values.get(name)
        if value is None:
            reason = str(errors.get(name, "it was not computed (add it to the job's proxies)"))
            raise _budget(f"the minimum {name} is {minimum:g}, but {reason}")
        if value < minimum:
            raise _budget(f"{name} = {value:.4g} is below the minimum {minimum:g}")
